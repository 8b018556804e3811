#!/usr/bin/env bash
# Builds phony Windows disks (no Windows can be had here), the way libguestfs' own tests fool
# its inspection: NTFS with the system root's layout, real registry hives made with hivex, a
# PE32+ `cmd.exe` for the architecture. Each carries what an Azure Windows image has that KVM
# does not want: the Azure guest agent services, a page file on the temporary disk D:.
#   OUT/win2019.raw    Windows Server 2019 Datacenter (10.0, build 17763), x86_64, GPT:
#                      EFI system partition, MSR, NTFS system volume; SYSTEM has the
#                      DriverDatabase (Windows 8 / 2012 and later); ControlSet001 current;
#                      WindowsAzureGuestAgent, RdAgent, WindowsAzureTelemetryService (Start=2);
#                      PagingFiles "D:\pagefile.sys"; SanPolicy 1 (OnlineAll, as Azure's
#                      image preparation sets it)
#   OUT/win2008r2.raw  Windows Server 2008 R2 Datacenter SP1 (6.1, build 7601), x86_64, MBR:
#                      "System Reserved" NTFS + NTFS system volume; no DriverDatabase (the
#                      CriticalDeviceDatabase path); ControlSet002 current (ControlSet001 a
#                      stale copy that must stay untouched); agent and RdAgent but no
#                      telemetry service; PagingFiles "D:\pagefile.sys 0 0" (system managed);
#                      SanPolicy 2 (OfflineShared)
#   OUT/win2008r2-hibernated.raw  the 2008 R2 disk with a hibernated system volume
#                      (hiberfil.sys starting with "HIBR"): ntfs-3g refuses it read-write
#   OUT/bitlocker.raw  a whole-disk BitLocker volume header (what blkid and libguestfs
#                      report as vfs-type BitLocker), nothing else
#   OUT/virtio-win/    a fake virtio-win tree in the layout virtio-win ships (viostor/<os>/<arch>/
#                      …, guest-agent/qemu-ga-x86_64.msi), each file naming its own directory
#   OUT/virtio-win.iso the same tree as an ISO 9660 image (Joliet + Rock Ridge), as virtio-win.iso
#   OUT/hives/         the hives as built (for reading back what changed)
# The disks are built in one libguestfs appliance (no loop devices, no host mounts).
#
# Usage: build-windows.sh OUT   (needs guestfish, python3, hivexregedit, xorriso; see .ci/guest-setup.sh)
set -euo pipefail

out=$1
mkdir -p "$out"
work="$out/work"
rm -rf "$work"
mkdir -p "$work" "$out/hives"
t0=$SECONDS

# Hives, PE files and the virtio-win tree, from python (hivex cannot create an empty hive).
python3 - "$work" "$out" <<'PY'
import os, struct, sys

work, out = sys.argv[1], sys.argv[2]

def empty_hive(path):
    """A valid empty regf hive: base block, one hbin, root nk, one sk, free space."""
    hb = bytearray(4096)
    hb[0:4] = b"hbin"
    struct.pack_into("<III", hb, 4, 0, 4096, 0)
    nk_off, sk_off = 0x20, 0x20 + 88
    name = b"ROOT"
    struct.pack_into("<i2sHQIIIIIIIIIIHHIIIIHH", hb, nk_off, -88, b"nk", 0x2c, 0, 0,
                     0xffffffff, 0, 0, 0xffffffff, 0xffffffff, 0, 0xffffffff, sk_off,
                     0xffffffff, 0, 0, 0, 0, 0, 0, len(name), 0)
    hb[nk_off + 80:nk_off + 80 + len(name)] = name
    sd = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)
    struct.pack_into("<i2sHIIII", hb, sk_off, -48, b"sk", 0, sk_off, sk_off, 1, len(sd))
    hb[sk_off + 24:sk_off + 24 + len(sd)] = sd
    struct.pack_into("<i", hb, sk_off + 48, 4096 - (sk_off + 48))
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, nk_off, 4096, 1)
    csum = 0
    for i in range(0, 0x1fc, 4):
        csum ^= struct.unpack_from("<I", base, i)[0]
    struct.pack_into("<I", base, 0x1fc, csum)
    with open(path, "wb") as f:
        f.write(bytes(base) + bytes(hb))

def pe(path, machine=0x8664):
    """A minimal PE32+ console executable header, enough for file(1) and inspection."""
    b = bytearray(0x200)
    b[0:2] = b"MZ"
    struct.pack_into("<I", b, 0x3c, 0x80)
    b[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", b, 0x84, machine, 0, 0x5c000000, 0, 0, 0xf0, 0x22)
    struct.pack_into("<H", b, 0x98, 0x20b)
    struct.pack_into("<H", b, 0x98 + 68, 3)
    with open(path, "wb") as f:
        f.write(b)

def hexbytes(data):
    return ",".join("%02x" % c for c in data)

def sz(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')

def expand_sz(s):
    return "hex(2):" + hexbytes((s + "\0").encode("utf-16-le"))

def multi_sz(items):
    return "hex(7):" + hexbytes(("".join(i + "\0" for i in items) + "\0").encode("utf-16-le"))

def dword(n):
    return "dword:%08x" % n

def reg_file(path, keys):
    """A .reg file for hivexregedit --merge, every ancestor key listed before its children."""
    seen, lines = set(), ["Windows Registry Editor Version 5.00", ""]
    for key, values in keys:
        parts = key.strip("\\").split("\\")
        for i in range(1, len(parts)):
            ancestor = "\\" + "\\".join(parts[:i])
            if ancestor not in seen:
                seen.add(ancestor)
                lines += ["[%s]" % ancestor, ""]
        seen.add(key)
        lines.append("[%s]" % key)
        for name, value in values:
            lines.append("%s=%s" % ("@" if name == "" else '"%s"' % name, value))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))

def service(start, image, display, typ=0x10):
    return [("Type", dword(typ)), ("Start", dword(start)), ("ErrorControl", dword(1)),
            ("ImagePath", expand_sz(image)), ("DisplayName", sz(display)),
            ("ObjectName", sz("LocalSystem"))]

AGENT = "C:\\WindowsAzure\\GuestAgent_2.7.41491.1102_2023-11-09_203435"

def system_keys(cs, telemetry, paging, san, driver_database):
    keys = [
        ("\\%s\\Control\\ComputerName\\ComputerName" % cs, [("ComputerName", sz("AZWIN"))]),
        ("\\%s\\Control\\Session Manager\\Memory Management" % cs,
         [("PagingFiles", multi_sz([paging])),
          ("ExistingPageFiles", multi_sz(["\\??\\D:\\pagefile.sys"])),
          ("ClearPageFileAtShutdown", dword(0))]),
        ("\\%s\\Services\\Tcpip\\Parameters" % cs, [("Hostname", sz("azwin"))]),
        ("\\%s\\Services\\WindowsAzureGuestAgent" % cs,
         service(2, AGENT + "\\WindowsAzureGuestAgent.exe", "Windows Azure Guest Agent")),
        ("\\%s\\Services\\RdAgent" % cs,
         service(2, AGENT + "\\WaAppAgent.exe", "RdAgent")),
        ("\\%s\\Services\\partmgr\\Parameters" % cs, [("SanPolicy", dword(san))]),
        ("\\%s\\Services\\disk" % cs,
         [("Type", dword(1)), ("Start", dword(0)), ("ErrorControl", dword(1)),
          ("Group", sz("SCSI Class")), ("ImagePath", expand_sz("System32\\drivers\\disk.sys"))]),
        ("\\%s\\Control\\Class\\{4d36e97b-e325-11ce-bfc1-08002be10318}" % cs,
         [("Class", sz("SCSIAdapter"))]),
    ]
    if telemetry:
        keys.append(("\\%s\\Services\\WindowsAzureTelemetryService" % cs,
                     service(2, AGENT + "\\WindowsAzureTelemetryService.exe",
                             "Windows Azure Telemetry Service")))
    if driver_database:
        keys += [
            ("\\DriverDatabase", [("Architecture", dword(9))]),
            ("\\DriverDatabase\\DriverInfFiles\\disk.inf",
             [("", multi_sz(["disk.inf_amd64_b4a9d5f4d1e8f0d5"])),
              ("Active", sz("disk.inf_amd64_b4a9d5f4d1e8f0d5"))]),
            ("\\DriverDatabase\\DeviceIds\\GenDisk", [("disk.inf", "hex:01,ff,00,00")]),
            ("\\DriverDatabase\\DriverPackages\\disk.inf_amd64_b4a9d5f4d1e8f0d5",
             [("", sz("disk.inf"))]),
        ]
    else:
        keys.append(("\\%s\\Control\\CriticalDeviceDatabase\\primary_ide_channel" % cs,
                     [("Service", sz("atapi")),
                      ("ClassGUID", sz("{4D36E96A-E325-11CE-BFC1-08002BE10318}"))]))
    return keys

def software_keys(product, version, build, major=None, csd=None):
    cv = [("ProductName", sz(product)), ("CurrentVersion", sz(version)),
          ("CurrentBuild", sz(build)), ("CurrentBuildNumber", sz(build)),
          ("InstallationType", sz("Server")), ("EditionID", sz("ServerDatacenter")),
          ("SystemRoot", sz("C:\\Windows")), ("PathName", sz("C:\\Windows"))]
    if major is not None:
        cv += [("CurrentMajorVersionNumber", dword(major)), ("CurrentMinorVersionNumber", dword(0))]
    if csd:
        cv.append(("CSDVersion", sz(csd)))
    return [
        ("\\Microsoft\\Windows NT\\CurrentVersion", cv),
        ("\\Microsoft\\Windows\\CurrentVersion",
         [("DevicePath", expand_sz("%SystemRoot%\\inf")),
          ("ProgramFilesDir", sz("C:\\Program Files"))]),
    ]

guests = {
    "win2019": dict(
        system=[("\\Select", [("Current", dword(1)), ("Default", dword(1)),
                              ("Failed", dword(0)), ("LastKnownGood", dword(1))])]
        + system_keys("ControlSet001", True, "D:\\pagefile.sys", 1, True),
        software=software_keys("Windows Server 2019 Datacenter", "6.3", "17763", major=10)),
    "win2008r2": dict(
        system=[("\\Select", [("Current", dword(2)), ("Default", dword(2)),
                              ("Failed", dword(0)), ("LastKnownGood", dword(1))])]
        + system_keys("ControlSet002", False, "D:\\pagefile.sys 0 0", 2, False)
        # A stale control set: its services must stay as they are.
        + [("\\ControlSet001\\Services\\WindowsAzureGuestAgent",
            service(2, AGENT + "\\WindowsAzureGuestAgent.exe", "Windows Azure Guest Agent"))],
        software=software_keys("Windows Server 2008 R2 Datacenter", "6.1", "7601",
                               csd="Service Pack 1")),
}
for name, g in guests.items():
    for hive in ("system", "software"):
        empty_hive(os.path.join(work, "%s-%s" % (name, hive)))
        reg_file(os.path.join(work, "%s-%s.reg" % (name, hive)), g[hive])
pe(os.path.join(work, "cmd.exe"))
# The boot configuration store on the ESP (a hive too), as UEFI Windows has it; virt-v2v
# opens it. Its objects are irrelevant here.
empty_hive(os.path.join(work, "bcd"))
reg_file(os.path.join(work, "bcd.reg"), [
    ("\\Description", [("KeyName", sz("BCD00000000")), ("System", dword(1)),
                       ("TreatAsSystem", dword(1))]),
    ("\\Objects", []),
])

# The fake virtio-win tree: the directory names and file names virtio-win ships.
drivers = {
    "viostor": ["viostor.inf", "viostor.cat", "viostor.sys", "viostor.pdb"],
    "vioscsi": ["vioscsi.inf", "vioscsi.cat", "vioscsi.sys", "vioscsi.pdb"],
    "NetKVM": ["netkvm.inf", "netkvm.cat", "netkvm.sys", "netkvmco.dll", "netkvmp.exe"],
    "Balloon": ["balloon.inf", "balloon.cat", "balloon.sys", "blnsvr.exe"],
    "vioserial": ["vioser.inf", "vioser.cat", "vioser.sys"],
    "viorng": ["viorng.inf", "viorng.cat", "viorng.sys", "viorngci.dll", "viorngum.dll"],
    "pvpanic": ["pvpanic.inf", "pvpanic.cat", "pvpanic.sys"],
    "qemufwcfg": ["qemufwcfg.inf", "qemufwcfg.cat"],
}
pci = {"viostor": [("1001", "00021AF4", "00"), ("1042", "11001AF4", "01")],
       "vioscsi": [("1004", "00081AF4", "00"), ("1048", "11001AF4", "01")],
       "NetKVM": [("1000", "00011AF4", "00"), ("1041", "11001AF4", "01")],
       "Balloon": [("1002", "00051AF4", "00"), ("1045", "11001AF4", "01")],
       "vioserial": [("1003", "00031AF4", "00"), ("1043", "11001AF4", "01")],
       "viorng": [("1005", "00041AF4", "00"), ("1044", "11001AF4", "01")],
       "pvpanic": [], "qemufwcfg": []}
oses = ["2k8R2", "w7", "2k12R2", "2k16", "2k19", "w10", "w11"]
tree = os.path.join(out, "virtio-win")
for drv, files in drivers.items():
    for osname in oses:
        for arch in ("amd64", "x86"):
            if arch == "x86" and osname.startswith("2k") and osname != "2k8R2":
                continue
            d = os.path.join(tree, drv, osname, arch)
            os.makedirs(d, exist_ok=True)
            for f in files:
                marker = "h2k-fake-virtio-win %s/%s/%s/%s\n" % (drv, osname, arch, f)
                if f.endswith(".inf"):
                    plat = "NTamd64" if arch == "amd64" else "NTx86"
                    models = "\n".join(
                        "%%DeviceDesc%% = inst, PCI\\VEN_1AF4&DEV_%s&SUBSYS_%s&REV_%s, PCI\\VEN_1AF4&DEV_%s"
                        % (dev, sub, rev, dev) for dev, sub, rev in pci[drv])
                    body = ("; " + marker +
                            "[Version]\nSignature=\"$WINDOWS NT$\"\nClass=SCSIAdapter\n"
                            "ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}\nProvider=%%VENDOR%%\n"
                            "DriverVer = 08/01/2023,100.94.104.24000\nCatalogFile=%s.cat\n\n"
                            "[Manufacturer]\n%%VENDOR%% = VENDOR,%s\n\n[VENDOR.%s]\n%s\n\n"
                            "[Strings]\nVENDOR = \"Red Hat, Inc.\"\nDeviceDesc = \"%s\"\n"
                            % (f[:-4], plat, plat, models, drv))
                    open(os.path.join(d, f), "w").write(body)
                else:
                    open(os.path.join(d, f), "w").write(marker)
ga = os.path.join(tree, "guest-agent")
os.makedirs(ga, exist_ok=True)
for f in ("qemu-ga-x86_64.msi", "qemu-ga-i386.msi"):
    open(os.path.join(ga, f), "w").write("h2k-fake-virtio-win guest-agent/%s\n" % f)
open(os.path.join(tree, "virtio-win-license.txt"), "w").write("fake\n")

# A hibernation file's header, as Windows leaves it when it hibernates.
with open(os.path.join(work, "hiberfil.sys"), "wb") as f:
    f.write(b"HIBR" + bytes(8188))

# A BitLocker volume (Windows 7 and later): boot sector signature, FVE metadata offsets, and
# the three metadata blocks' headers, as blkid's probe checks them.
b = bytearray(16 << 20)
b[0:11] = b"\xeb\x58\x90-FVE-FS-"
struct.pack_into("<HB", b, 11, 512, 8)
for i, off in enumerate((0x10000, 0x20000, 0x30000)):
    struct.pack_into("<Q", b, 0xb0 + 8 * i, off)
    b[off:off + 8] = b"-FVE-FS-"
    struct.pack_into("<HH", b, off + 8, 0x40, 2)
b[0x1fe:0x200] = b"\x55\xaa"
with open(os.path.join(out, "bitlocker.raw"), "wb") as f:
    f.write(b)
PY

for g in win2019 win2008r2; do
  for h in system software; do
    hivexregedit --merge "$work/$g-$h" "$work/$g-$h.reg" ||
      { echo "build-windows: merging $g-$h.reg failed" >&2; exit 1; }
    cp "$work/$g-$h" "$out/hives/$g-$h"
  done
done
hivexregedit --merge "$work/bcd" "$work/bcd.reg"

xorriso -as mkisofs -quiet -J -R -V virtio-win -o "$out/virtio-win.iso" "$out/virtio-win"

# The disks in one appliance: /dev/sda is the 2019 disk, /dev/sdb the 2008 R2 one, /dev/sdc
# its hibernated copy.
rm -f "$work/win2019.raw" "$work/win2008r2.raw"
guestfish <<EOF
sparse $work/win2019.raw 160M
sparse $work/win2008r2.raw 160M
sparse $work/win2008r2-hibernated.raw 160M
run

# Server 2019, Gen2: GPT with the ESP, Microsoft's reserved partition and the system volume.
part-init /dev/sda gpt
part-add /dev/sda p 2048 67583
part-add /dev/sda p 67584 100351
part-add /dev/sda p 100352 -34
part-set-gpt-type /dev/sda 1 C12A7328-F81F-11D2-BA4B-00A0C93EC93B
part-set-gpt-type /dev/sda 2 E3C9E316-0B5C-4DB8-817D-F92DF00215AE
part-set-gpt-type /dev/sda 3 EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
mkfs vfat /dev/sda1
mkfs ntfs /dev/sda3
mount /dev/sda3 /
mkdir-p /Windows/System32/config
mkdir-p /Windows/System32/drivers
mkdir-p /Windows/INF
mkdir-p "/Program Files"
mkdir-p "/WindowsAzure/GuestAgent_2.7.41491.1102_2023-11-09_203435"
upload $work/win2019-system /Windows/System32/config/SYSTEM
upload $work/win2019-software /Windows/System32/config/SOFTWARE
upload $work/cmd.exe /Windows/System32/cmd.exe
write /Windows/System32/drivers/disk.sys "phony disk.sys"
write "/WindowsAzure/GuestAgent_2.7.41491.1102_2023-11-09_203435/WindowsAzureGuestAgent.exe" "phony"
umount /
mount /dev/sda1 /
mkdir-p /EFI/Microsoft/Boot
mkdir-p /EFI/Boot
upload $work/cmd.exe /EFI/Microsoft/Boot/bootmgfw.efi
upload $work/cmd.exe /EFI/Boot/bootx64.efi
upload $work/bcd /EFI/Microsoft/Boot/BCD
umount /

# Server 2008 R2, Gen1: MBR with "System Reserved" (active) and the system volume.
part-init /dev/sdb mbr
part-add /dev/sdb p 2048 67583
part-add /dev/sdb p 67584 -1
part-set-bootable /dev/sdb 1 true
pwrite-device /dev/sdb "h2kw" 0x01b8 | cat >/dev/null
mkfs ntfs /dev/sdb1
mkfs ntfs /dev/sdb2
mount /dev/sdb1 /
mkdir-p /Boot
write /bootmgr "phony bootmgr"
umount /
mount /dev/sdb2 /
mkdir-p /Windows/System32/config
mkdir-p /Windows/System32/drivers
mkdir-p "/Program Files"
mkdir-p "/WindowsAzure/GuestAgent_2.7.41491.1102_2023-11-09_203435"
upload $work/win2008r2-system /Windows/System32/config/SYSTEM
upload $work/win2008r2-software /Windows/System32/config/SOFTWARE
upload $work/cmd.exe /Windows/System32/cmd.exe
write /Windows/System32/drivers/disk.sys "phony disk.sys"
umount /

# The same 2008 R2 disk, hibernated.
copy-device-to-device /dev/sdb /dev/sdc
blockdev-rereadpt /dev/sdc
mount /dev/sdc2 /
upload $work/hiberfil.sys /hiberfil.sys
umount /
EOF

mv "$work/win2019.raw" "$work/win2008r2.raw" "$work/win2008r2-hibernated.raw" "$out/"
rm -rf "$work"
echo "build-windows: built in $((SECONDS - t0)) s"

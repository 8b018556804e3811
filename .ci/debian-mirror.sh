#!/usr/bin/env bash
# Sourced by .ci/guest-setup.sh and .ci/container.sh.

# The Debian archive this machine's apt is configured with for a suite (default `bookworm`),
# never a hard-coded host: the first enabled `deb` source that serves the suite, from one-line
# or deb822 files. Prints nothing when no source serves it.
h2k_debian_mirror() {
  local suite=${1:-bookworm} f all
  # Collected first, then cut to the first line: `| head` under pipefail could fail the pipe.
  all="$({
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      awk -v suite="$suite" '$1 == "deb" {
             i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
             if ($(i+1) == suite) print $i }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f $f ]] || continue
      awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
           { types = uris = suites = ""; enabled = 1
             for (i = 1; i <= NF; i++) {
               line = $i
               if (line ~ /^#/) continue
               if (line ~ /^Types:/)   types = " " substr(line, 7) " "
               if (line ~ /^URIs:/)    uris = substr(line, 6)
               if (line ~ /^Suites:/)  suites = " " substr(line, 8) " "
               if (line ~ /^Enabled:[ \t]*no/) enabled = 0
             }
             gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
             if (enabled && types ~ / deb / && index(suites, " " suite " ")) {
               split(uris, u, /[ \t]+/); for (j in u) if (u[j] != "") { print u[j]; break }
             } }' "$f"
    done
  })"
  printf '%s\n' "${all%%$'\n'*}"
}

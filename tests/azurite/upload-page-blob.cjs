// Uploads a fixed VHD to Azurite as a sparse page blob with the real Put Page API, and prints
// a read SAS URL for it (or one that expired an hour ago with --expired).
//
//   node upload-page-blob.cjs BLOB_ENDPOINT CONTAINER BLOB FILE [--expired]
//
// Only runs of 64 KiB blocks holding a non-zero byte are put (at most 4 MiB per Put Page), so
// Get Page Ranges reports just the written parts, as it does for an exported managed disk. Needs @azure/storage-blob on
// NODE_PATH (.ci/run installs it under .tools/).
"use strict";
const fs = require("fs");
const {
  BlobServiceClient,
  StorageSharedKeyCredential,
  BlobSASPermissions,
  generateBlobSASQueryParameters,
} = require("@azure/storage-blob");

// Azurite's fixed development account, documented by Microsoft for the emulator.
const ACCOUNT = "devstoreaccount1";
const KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const PIECE = 4 * 1024 * 1024;
const BLOCK = 64 * 1024;

async function main() {
  const [endpoint, container, blob, file, flag] = process.argv.slice(2);
  const credential = new StorageSharedKeyCredential(ACCOUNT, KEY);
  const service = new BlobServiceClient(endpoint, credential);
  const containerClient = service.getContainerClient(container);
  await containerClient.createIfNotExists();
  const pageBlob = containerClient.getPageBlobClient(blob);
  const size = fs.statSync(file).size;
  await pageBlob.create(size);
  const fd = fs.openSync(file, "r");
  const buf = Buffer.alloc(PIECE);
  let put = 0;
  for (let offset = 0; offset < size; offset += PIECE) {
    const n = fs.readSync(fd, buf, 0, Math.min(PIECE, size - offset), offset);
    // Put each run of non-zero blocks of this piece.
    let run = -1;
    for (let at = 0; at < n + BLOCK; at += BLOCK) {
      const end = Math.min(at + BLOCK, n);
      const data = at < n && buf.subarray(at, end).some((b) => b !== 0);
      if (data && run < 0) run = at;
      if (!data && run >= 0) {
        const stop = Math.min(at, n);
        await pageBlob.uploadPages(buf.subarray(run, stop), offset + run, stop - run);
        put += stop - run;
        run = -1;
      }
    }
  }
  fs.closeSync(fd);
  const now = Date.now();
  const expiresOn = new Date(flag === "--expired" ? now - 3600e3 : now + 3600e3);
  const sas = generateBlobSASQueryParameters(
    {
      containerName: container,
      blobName: blob,
      permissions: BlobSASPermissions.parse("r"),
      startsOn: new Date(now - 7200e3),
      expiresOn,
    },
    credential,
  ).toString();
  process.stderr.write(`put ${put} of ${size} bytes\n`);
  process.stdout.write(`${pageBlob.url}?${sas}\n`);
}

main().catch((e) => {
  process.stderr.write(`upload failed: ${e.message}\n`);
  process.exit(1);
});

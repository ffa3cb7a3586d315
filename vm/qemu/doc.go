// Package qemu is the QEMU driver: it evicts a running QEMU guest and
// resumes it on another host on lazily gathered memory and disks.
//
// Words:
//
//   - QMP: QEMU's JSON control protocol, spoken over a unix socket.
//   - machine arguments: the guest's QEMU command line, read from
//     /proc/<pid>/cmdline of the process behind the QMP socket. Host paths
//     in it (memory backend, drives, kernel, initrd, sockets, serial) are
//     rewritten for the destination; everything else is kept, so the
//     destination builds the same virtual hardware.
//   - device state: what `migrate` writes with x-ignore-shared set. Guest
//     RAM is a shared memory-backend-file, so it stays out of the state
//     (about half a megabyte for a small guest) and travels as the "mem"
//     region instead, as 4 KiB chunks: zero pages never travel, duplicates
//     travel once.
//   - guest config: the "qemu" region of an eviction, a small JSON
//     document (Config) with the machine arguments, which region replaces
//     which host path, and when the source paused.
//
// At the source (Driver): Pause stops the guest, saves the device state
// next to the registry and opens memory, disks, kernel, initrd, state and
// guest config as regions; Release quits QEMU once the eviction time is
// reached; Resume continues the guest if the eviction failed.
//
// At the destination (Resume): QEMU starts with the same machine arguments,
// guest RAM from the lazy FUSE view of the "mem" region, disks from the
// lazy NBD exports, kernel and initrd from the FUSE view, and
// `-incoming defer`; the device state is loaded from the FUSE view and the
// guest continues. Downtime is pause to `cont`. The gather goes on
// underneath: the guest's reads of missing pages and blocks are demand
// reads.
package qemu

// Package qemu is the QEMU driver: it evicts a running QEMU guest and
// resumes it on another host on lazily gathered memory and disks.
//
// Words:
//
//   - QMP: QEMU's JSON control protocol, spoken over a unix socket.
//   - guest description (Description): the guest's virtual hardware
//     (architecture, machine, CPU, memory backends, drives, devices,
//     kernel command line, serial ports), parsed at the source from
//     /proc/<pid>/cmdline of the process behind the QMP socket
//     (ParseArgs). It holds no host path and no program: memory, disks,
//     kernel and initrd are regions, named by their position.
//   - allow-list: the options, sub-keys and values a description may
//     carry (guest.go). Description.Check is the one check of both ends:
//     `sgctl vm add` at the source, and the destination before it builds
//     anything. An option or key outside it, a duplicated key, or a key
//     naming a host path, a program or a helper is refused by name.
//   - device state: what `migrate` writes with x-ignore-shared set. Guest
//     RAM is a shared memory-backend-file, so it stays out of the state
//     (about half a megabyte for a small guest) and travels as the "mem"
//     region instead, as 4 KiB chunks: zero pages never travel, duplicates
//     travel once. sgnode hands QEMU the state as a descriptor (QMP getfd,
//     an "fd:" migration): QEMU opens nothing and runs no program for it.
//   - guest config: the "qemu" region of an eviction, a small JSON
//     document (Config): the description and when the source paused.
//
// At the source (Driver): Pause stops the guest, saves the device state
// next to the registry and opens memory, disks, kernel, initrd, state and
// guest config as regions; Release quits QEMU once the eviction time is
// reached; Resume continues the guest if the eviction failed.
//
// At the destination (Resume): the command line is built from the checked
// description (Description.Args), every host path one of the placement's,
// inside the guest's own directories: guest RAM from the lazy FUSE view of
// the "mem" region, disks from the lazy NBD exports (format=raw), kernel
// and initrd from the FUSE view, and `-incoming defer`. The binary, the
// user and the sandbox are local settings (Host): the host's
// qemu-system-<arch>, dropping to an unprivileged user once it has opened
// those files, under a seccomp sandbox that forbids spawning. The device
// state is loaded and the guest continues. Downtime is pause to `cont`.
// The gather goes on underneath: the guest's reads of missing pages and
// blocks are demand reads.
//
// What the destination still trusts: its own QEMU binary and the device
// models the allow-list admits, which parse the device state stream and
// serve the guest (an escape from them runs as the QEMU user, sandboxed,
// with the guest's files already open); QEMU's startup as root up to the
// drop (it parses only the command line sgnode built); and the guest's
// kernel command line (-append), which only the guest reads.
package qemu

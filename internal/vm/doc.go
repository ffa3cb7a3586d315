// Package vm knows the VMs a host can evict and how to get at their state.
//
// Words:
//
//   - driver: how one kind of VM is paused, read and released. `files`
//     takes a snapshot already on disk (a QEMU memory-backend file, a
//     Firecracker snapshot, raw disk images); `qemu` (package vm/qemu) pauses a
//     running guest over QMP and resumes it at the destination.
//   - snapshot: a paused VM's regions, open for reading until released.
//   - region: memory image, disk image or device-state blob.
//
// Lifecycle of one eviction: Pause → read the snapshot's regions while
// scattering → Release once the eviction time is reached (the source may
// then drop the VM), or Resume if the eviction failed, so a failed
// eviction never loses a VM.
//
// A registry entry records every image's size when it is added; Pause
// refuses a snapshot whose files are missing, unreadable or changed size
// since, before anything is sent.
package vm

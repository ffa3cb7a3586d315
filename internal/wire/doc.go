// Package wire is the codec of sg's stream protocols: length-prefixed, typed
// frames with hard caps, and the messages carried in them.
//
// A frame is
//
//	+-----------------+--------+-------------------------+
//	| length (u32 BE) | type   | payload (length-1 bytes) |
//	+-----------------+--------+-------------------------+
//
// where length counts the type byte and the payload. A Reader refuses any
// frame longer than its cap before reading the payload, so a peer can never
// make us allocate more than the cap, however it lies.
//
// Messages (all integers big-endian):
//
//	Push     n u16, n × (len u32, data)            chunks to store (the receiver computes their IDs)
//	PushAck  n u16, n × status u8, digest [32]     a status per pushed chunk, in order; SHA-256 of their IDs
//	Have     n u16, n × id [32]                    which of these do you hold?
//	HaveAck  n u16, bitmap ⌈n/8⌉                   bit i set: chunk i is held
//	Get      prio u8, n u16, n × id [32]           send me these chunks
//	GetAck   n u16, n × (status u8, [len u32, data] if status is OK)
//	Info     (empty payload)                        ask for capacity and load
//	InfoAck  memFree u64, diskFree u64, load u32, zone (len u8, bytes)
//	Error    code u8, message (len u16, bytes)      the request was refused
//
// Ownership: decoded chunk data and IDs alias the frame buffer and are valid
// only until the Reader's next call to Next. Callers that keep them copy.
package wire

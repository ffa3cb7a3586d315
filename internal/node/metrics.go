package node

import "github.com/prometheus/client_golang/prometheus"

// metrics are one node's counters, registered on the node's own registry
// (many simnet nodes share a process). No peer or chunk IDs as labels.
type metrics struct {
	reg            prometheus.Registerer  // for collectors of the layers above (Registry)
	pushChunks     *prometheus.CounterVec // by result status
	pushBytes      prometheus.Counter
	servedChunks   *prometheus.CounterVec // get, by priority
	servedBytes    prometheus.Counter
	fetchedBytes   prometheus.Counter
	badChunks      prometheus.Counter // chunks a peer sent that failed re-hashing
	quotaRefused   prometheus.Counter // pushed chunks refused: over the peer's quota
	banned         prometheus.Counter // peers banned for misbehaving
	throttled      prometheus.Counter // requests delayed or refused by the per-peer request rate
	refused        prometheus.Counter // connections refused by the gater
	protoErrors    *prometheus.CounterVec
	releasedChunks prometheus.Counter // chunks freed because their migration completed
	peers          prometheus.GaugeFunc
	udpBuffer      *prometheus.GaugeVec // bytes the kernel grants a QUIC socket, by direction
}

func newMetrics(reg prometheus.Registerer, connected func() float64) *metrics {
	m := &metrics{
		reg: reg,
		pushChunks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sg_node_push_received_chunks_total", Help: "Chunks received by push, by outcome.",
		}, []string{"status"}),
		pushBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_push_received_bytes_total", Help: "Chunk bytes received by push and stored.",
		}),
		servedChunks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sg_node_get_served_chunks_total", Help: "Chunks served to get requests, by priority.",
		}, []string{"priority"}),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_get_served_bytes_total", Help: "Chunk bytes served to get requests.",
		}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_get_fetched_bytes_total", Help: "Verified chunk bytes fetched from peers.",
		}),
		badChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_bad_chunks_total", Help: "Chunks from peers whose bytes did not match their ID.",
		}),
		banned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_banned_peers_total", Help: "Peers cut off and refused for sending wrong chunks or malformed frames.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_throttled_requests_total", Help: "Have and get requests delayed or refused by the per-peer request rate.",
		}),
		quotaRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_push_quota_refused_chunks_total", Help: "Pushed chunks refused because their peer was over its quota.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_refused_connections_total", Help: "Connections refused because the peer is not admitted.",
		}),
		protoErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sg_node_protocol_errors_total", Help: "Streams ended by a protocol violation, by protocol.",
		}, []string{"protocol"}),
		releasedChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sg_node_released_chunks_total", Help: "Chunks freed because the gather of their migration completed.",
		}),
		peers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sg_node_connected_peers", Help: "Peers with an open connection.",
		}, connected),
		udpBuffer: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sg_node_udp_buffer_bytes", Help: "UDP socket buffer the kernel grants a QUIC socket asking for 7 MiB, by direction (recv, send); 0 if unmeasured.",
		}, []string{"direction"}),
	}
	reg.MustRegister(m.udpBuffer, m.pushChunks, m.pushBytes, m.servedChunks, m.servedBytes, m.fetchedBytes,
		m.badChunks, m.quotaRefused, m.banned, m.throttled, m.refused, m.protoErrors, m.releasedChunks, m.peers)
	return m
}

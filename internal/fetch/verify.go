package fetch

import (
	"context"
	"fmt"
	"slices"

	"github.com/sgrelay/sg/internal/chunk"
	"github.com/sgrelay/sg/internal/manifest"
	"github.com/sgrelay/sg/internal/seal"
	"github.com/sgrelay/sg/internal/wire"
)

// HaveAsker asks a peer which chunks it holds.
type HaveAsker interface {
	Have(ctx context.Context, peer string, ids []chunk.ID) ([]bool, error)
}

// VerifyResult says how safely a manifest's chunks are held.
type VerifyResult struct {
	Name           string
	Regions        int
	Bytes          int64
	Chunks         int64
	ZeroChunks     int64
	DistinctChunks int64
	// MinHolders is the fewest peers holding any distinct chunk.
	MinHolders int
	// Holders counts distinct chunks by how many peers hold them.
	Holders map[int]int64
	// HoldersPerPeer counts the distinct chunks each peer holds.
	HoldersPerPeer map[string]int64
	// CopiesFetched and BadCopies are set when copies were fetched.
	CopiesFetched int64
	BadCopies     int64 // served with the wrong bytes, or unreadable at the holder
	Vanished      int64 // gone between the have query and the fetch (e.g. released)
	// Stripes of an erasure-coded manifest, and the fewest of their shards
	// held beyond the k that decode them (negative: undecodable).
	Stripes        int64
	MinStripeSpare int
	// Tolerates is how many holders may be lost with every chunk still
	// held or decodable: the fewest holders of a chunk in no stripe less
	// one, and the fewest spare shards of a stripe (whose shards are on
	// distinct holders). Negative: something is lost already.
	Tolerates int
}

// Resolved is a manifest with the chunk ID of every position.
type Resolved struct {
	*manifest.Manifest
	IDs [][]chunk.ID // per region, per position; chunk.Zero for zero chunks
	// Plains are a sealed manifest's plain IDs at the same positions,
	// resolved only when its secret was given.
	Plains [][]chunk.ID
	// Stripes are an erasure-coded manifest's stripes.
	Stripes []manifest.Stripe
}

// ResolveManifest fetches a manifest root and its blocks (from local or
// from the first holder that has each) and returns every region's chunk
// IDs. For a sealed manifest given its secret, it also opens the key
// blocks (a wrong secret is manifest.ErrWrongSecret); without one, the
// plain IDs stay unknown, which is enough to check who holds the chunks.
func ResolveManifest(ctx context.Context, net Network, holders []Holder, local LocalStore, root chunk.ID, secret seal.Secret) (*Resolved, error) {
	holders = slices.Clone(holders) // fetchOne reorders it
	rootData, err := fetchOne(ctx, net, holders, local, root)
	if err != nil {
		return nil, fmt.Errorf("manifest root %s: %w", root, err)
	}
	m, err := manifest.Decode(rootData)
	if err != nil {
		return nil, fmt.Errorf("%s is not a manifest root: %w", root, err)
	}
	res := &Resolved{Manifest: m, IDs: make([][]chunk.ID, len(m.Regions))}
	if m.Sealed && !secret.IsZero() {
		res.Plains = make([][]chunk.ID, len(m.Regions))
	}
	for i, r := range m.Regions {
		for n, b := range r.Blocks {
			data, err := fetchOne(ctx, net, holders, local, b)
			if err != nil {
				return nil, fmt.Errorf("manifest block %s: %w", b, err)
			}
			if res.IDs[i], err = manifest.DecodeBlock(data, res.IDs[i]); err != nil {
				return nil, fmt.Errorf("manifest block %s: %w", b, err)
			}
			if res.Plains == nil {
				continue
			}
			if data, err = fetchOne(ctx, net, holders, local, r.KeyBlocks[n]); err != nil {
				return nil, fmt.Errorf("manifest key block %s: %w", r.KeyBlocks[n], err)
			}
			if res.Plains[i], err = manifest.OpenKeyBlock(data, secret, i, n, res.Plains[i]); err != nil {
				return nil, fmt.Errorf("manifest key block %s: %w", r.KeyBlocks[n], err)
			}
		}
		if int64(len(res.IDs[i])) != r.Chunks() || res.Plains != nil && len(res.Plains[i]) != len(res.IDs[i]) {
			return nil, fmt.Errorf("region %s lists %d chunks for %d bytes: %w", r.Name, len(res.IDs[i]), r.Size, manifest.ErrMalformed)
		}
		if res.Plains != nil {
			for n, id := range res.IDs[i] {
				if id.IsZero() != res.Plains[i][n].IsZero() {
					return nil, fmt.Errorf("region %s position %d: zero in one list only: %w", r.Name, n, manifest.ErrMalformed)
				}
			}
		}
	}
	for _, b := range m.StripeBlocks {
		data, err := fetchOne(ctx, net, holders, local, b)
		if err != nil {
			return nil, fmt.Errorf("manifest stripe block %s: %w", b, err)
		}
		if res.Stripes, err = manifest.DecodeStripeBlock(data, res.Stripes); err != nil {
			return nil, fmt.Errorf("manifest stripe block %s: %w", b, err)
		}
	}
	return res, nil
}

// Verify resolves the manifest at root and asks every peer which of its
// chunks it holds. With fetchCopies, it also fetches every copy from every
// holder (the transport re-hashes each) and counts the bad ones.
func Verify(ctx context.Context, net Network, have HaveAsker, peers []Holder, local LocalStore, root chunk.ID, fetchCopies bool) (*VerifyResult, error) {
	m, err := ResolveManifest(ctx, net, peers, local, root, seal.Secret{})
	if err != nil {
		return nil, err
	}
	ids := m.IDs
	res := &VerifyResult{Name: m.Name, Regions: len(m.Regions), Holders: map[int]int64{}, HoldersPerPeer: map[string]int64{}}
	seen := map[chunk.ID]bool{}
	var distinct []chunk.ID
	for i, r := range m.Regions {
		res.Bytes += r.Size
		for _, id := range ids[i] {
			res.Chunks++
			if id.IsZero() {
				res.ZeroChunks++
				continue
			}
			if !seen[id] {
				seen[id] = true
				distinct = append(distinct, id)
			}
		}
	}
	res.DistinctChunks = int64(len(distinct))
	count := make([]int, len(distinct))
	held := map[string][]chunk.ID{}
	for _, p := range peers {
		hs, err := have.Have(ctx, p.Peer, distinct)
		if err != nil {
			return nil, fmt.Errorf("ask %s: %w", p.Peer, err)
		}
		for i, h := range hs {
			if h {
				count[i]++
				held[p.Peer] = append(held[p.Peer], distinct[i])
			}
		}
		res.HoldersPerPeer[p.Peer] = int64(len(held[p.Peer]))
	}
	res.MinHolders = -1
	for _, c := range count {
		res.Holders[c]++
		if res.MinHolders < 0 || c < res.MinHolders {
			res.MinHolders = c
		}
	}
	if res.MinHolders < 0 {
		res.MinHolders = 0
	}
	if err := verifyStripes(ctx, have, peers, m.Stripes, distinct, count, res); err != nil {
		return nil, err
	}
	if !fetchCopies {
		return res, nil
	}
	for _, p := range peers {
		ids := held[p.Peer]
		gs, err := net.OpenGet(ctx, p.Peer, wire.Prefetch, 4)
		if err != nil {
			return nil, err
		}
		for len(ids) > 0 {
			batch := slices.Clone(ids[:min(len(ids), 64)])
			ids = ids[len(batch):]
			err := gs.Get(ctx, batch, func(rs []wire.GetResult, err error) {
				if err != nil {
					res.BadCopies += int64(len(batch))
					return
				}
				for _, r := range rs {
					switch r.Status {
					case wire.StatusOK:
						res.CopiesFetched++
					case wire.StatusMissing:
						res.Vanished++
					default:
						res.BadCopies++
					}
				}
			})
			if err != nil {
				gs.Abort()
				return nil, err
			}
		}
		if err := gs.Close(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// verifyStripes counts how many shards of each stripe some peer holds and
// sets Stripes, MinStripeSpare and Tolerates; count[i] is how many peers
// hold distinct[i].
func verifyStripes(ctx context.Context, have HaveAsker, peers []Holder, stripes []manifest.Stripe, distinct []chunk.ID, count []int, res *VerifyResult) error {
	holders := make(map[chunk.ID]int, len(distinct))
	for i, id := range distinct {
		holders[id] = count[i]
	}
	var parity []chunk.ID
	for _, s := range stripes {
		parity = append(parity, s.Parity...)
	}
	held := make([]bool, len(parity))
	for _, p := range peers {
		if len(parity) == 0 {
			break
		}
		hs, err := have.Have(ctx, p.Peer, parity)
		if err != nil {
			return fmt.Errorf("ask %s: %w", p.Peer, err)
		}
		for i, h := range hs {
			held[i] = held[i] || h
		}
	}
	striped := map[chunk.ID]bool{}
	res.Stripes = int64(len(stripes))
	pi := 0
	for si, s := range stripes {
		n := 0
		for _, id := range s.Data {
			striped[id] = true
			if holders[id] > 0 {
				n++
			}
		}
		for range s.Parity {
			if held[pi] {
				n++
			}
			pi++
		}
		if spare := n - len(s.Data); si == 0 || spare < res.MinStripeSpare {
			res.MinStripeSpare = spare
		}
	}
	tol, set := 0, false
	lower := func(v int) {
		if !set || v < tol {
			tol, set = v, true
		}
	}
	for i, id := range distinct {
		if !striped[id] {
			lower(count[i] - 1)
		}
	}
	if len(stripes) > 0 {
		lower(res.MinStripeSpare)
	}
	res.Tolerates = tol // 0 when there is nothing to lose
	return nil
}

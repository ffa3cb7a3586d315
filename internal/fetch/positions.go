package fetch

import "github.com/sgrelay/sg/internal/chunk"

// idPageLen is how many positions one page of placed IDs covers (16 KiB).
const idPageLen = 512

type idPage [idPageLen]chunk.ID

// placedIDs is one region's chunk ID per position, zero where nothing is
// placed yet. Pages are allocated as placements arrive, so an Open costs
// one pointer per 512 positions, not 32 bytes per position: what a source
// announces is a promise, what it places is what we hold.
type placedIDs struct {
	n     uint64
	pages []*idPage
}

func newPlacedIDs(n uint64) placedIDs {
	return placedIDs{n: n, pages: make([]*idPage, (n+idPageLen-1)/idPageLen)}
}

// len is the region's number of positions.
func (p *placedIDs) len() uint64 { return p.n }

// at is the ID placed at i (zero if none; i < len).
func (p *placedIDs) at(i uint64) chunk.ID {
	pg := p.pages[i/idPageLen]
	if pg == nil {
		return chunk.ID{}
	}
	return pg[i%idPageLen]
}

// set places id at i (i < len).
func (p *placedIDs) set(i uint64, id chunk.ID) {
	pg := p.pages[i/idPageLen]
	if pg == nil {
		pg = new(idPage)
		p.pages[i/idPageLen] = pg
	}
	pg[i%idPageLen] = id
}

// dense returns every position's ID in one slice (zero where unplaced).
func (p *placedIDs) dense() []chunk.ID {
	out := make([]chunk.ID, p.n)
	for k, pg := range p.pages {
		if pg != nil {
			copy(out[k*idPageLen:], pg[:])
		}
	}
	return out
}

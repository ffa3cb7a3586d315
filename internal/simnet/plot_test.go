package simnet

import (
	"fmt"
	"image/color"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

type plotRow struct {
	destMbps                         float64
	etSG, etDirect, tmtSG, tmtDirect time.Duration
}

// plotSlowDestination draws ET and TMT against destination bandwidth.
func plotSlowDestination(path string, vmMiB int64, rows []plotRow) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Slow destination (%d MiB VM, 1 Gbit/s source, one 1 Gbit/s intermediate)", vmMiB)
	p.X.Label.Text = "destination bandwidth (Mbit/s)"
	p.Y.Label.Text = "seconds (virtual time)"
	line := func(f func(plotRow) time.Duration) plotter.XYs {
		var xy plotter.XYs
		for _, r := range rows {
			xy = append(xy, plotter.XY{X: r.destMbps, Y: f(r).Seconds()})
		}
		return xy
	}
	series := []struct {
		name string
		f    func(plotRow) time.Duration
	}{
		{"ET scatter-gather", func(r plotRow) time.Duration { return r.etSG }},
		{"ET direct", func(r plotRow) time.Duration { return r.etDirect }},
		{"TMT scatter-gather", func(r plotRow) time.Duration { return r.tmtSG }},
		{"TMT direct", func(r plotRow) time.Duration { return r.tmtDirect }},
	}
	for i, s := range series {
		l, pts, err := plotter.NewLinePoints(line(s.f))
		if err != nil {
			return err
		}
		l.Color, pts.Color = plotColor(i), plotColor(i)
		if i >= 2 {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	p.Legend.Top = true
	p.Y.Min = 0
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

func plotColor(i int) color.Color {
	return []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	}[i%4]
}

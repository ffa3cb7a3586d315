package rawquic

import "testing"

func TestSendReceives(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	go s.Serve(t.Context())
	d, err := Send(t.Context(), s.Addr(), 8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Fatalf("elapsed %v", d)
	}
}

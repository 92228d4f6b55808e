package zklock

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/lockex/lockex/internal/zktest"
)

func packet(body ...byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestFramer: packet heads come out whole however the stream is cut.
func TestFramer(t *testing.T) {
	long := make([]byte, 40)
	for i := range long {
		long[i] = byte(i)
	}
	stream := slices.Concat(packet(1, 2, 3, 4, 5, 6, 7, 8), packet(), packet(long...), packet(9))
	want := [][]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {}, long[:16], {9}}
	for cut := 1; cut <= len(stream); cut++ {
		var f framer
		var got [][]byte
		for b := stream; len(b) > 0; {
			n := min(cut, len(b))
			f.feed(b[:n], func(head []byte) { got = append(got, slices.Clone(head)) })
			b = b[n:]
		}
		if len(got) != len(want) {
			t.Fatalf("cut %d: %d heads, want %d", cut, len(got), len(want))
		}
		for i := range want {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("cut %d: head %d = %v, want %v", cut, i, got[i], want[i])
			}
		}
		if f.packets != 4 {
			t.Errorf("cut %d: %d packets counted", cut, f.packets)
		}
	}
}

// TestLivenessFromTheWire: against a real server, the granted timeout is
// the server's (it clamps the 30s asked for to its maximum of 20s), and
// each answered request moves lastAnswered to its send time.
func TestLivenessFromTheWire(t *testing.T) {
	zkc := zktest.Start(t, zktest.SessionTimeouts(400*time.Millisecond, 20*time.Second))
	s, err := Connect(context.Background(), Options{
		Servers: []string{zkc.Servers[0].Addr()}, SessionTimeout: 30 * time.Second,
		ConnectTimeout: 5 * time.Second, Attempts: 1, Retries: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Granted(); got != 20*time.Second {
		t.Errorf("granted %s, want the server's maximum 20s", got)
	}
	_, connected := s.live.snapshot()
	before := time.Now()
	if _, _, err := s.conn.Exists("/"); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	_, last := s.live.snapshot()
	if !last.After(connected) || last.Before(before) || last.After(after) {
		t.Errorf("lastAnswered %s; want the send time of the request, between %s and %s",
			last.Format(time.StampMicro), before.Format(time.StampMicro), after.Format(time.StampMicro))
	}
}

package zklock

import (
	"encoding/binary"
	"slices"
	"testing"
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

package dirlock

import (
	"errors"
	"strings"
	"testing"
)

func TestSecondLockFailsUntilTheFirstIsReleased(t *testing.T) {
	dir := t.TempDir()
	first, err := Lock(dir, "the first writer")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir, "the first writer")
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "the first writer has this directory open") {
		t.Fatalf("second Lock: %v, want ErrLocked naming the holder", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Lock(dir, "the first writer")
	if err != nil {
		t.Fatalf("Lock after the first was released: %v", err)
	}
	_ = again.Close()
}

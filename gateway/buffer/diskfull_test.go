package buffer_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/internal/metrictest"
)

// diskFullDirEnv tells the re-executed test binary to run as the disk-full child.
const diskFullDirEnv = "MILLWRIGHT_BUFFER_DISKFULL_DIR"

// diskFullLimit is the largest file the child may write (RLIMIT_FSIZE): the kernel refuses
// writes past it with EFBIG, as a full disk refuses them with ENOSPC.
const diskFullLimit = 64 << 10

// TestDiskFullChild is not a test of its own: TestAppendFailsCleanlyWhenWritesFail runs it
// in a child process whose files may not grow past diskFullLimit. It appends until Append
// fails, printing "A <seq>" after each Append that succeeded and "E <error>" for the first
// failure, then checks one more Append also fails ("F <error>").
func TestDiskFullChild(t *testing.T) {
	dir := os.Getenv(diskFullDirEnv)
	if dir == "" {
		t.Skip("helper process of TestAppendFailsCleanlyWhenWritesFail")
	}
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG instead of being killed
	lim := syscall.Rlimit{Cur: diskFullLimit, Max: diskFullLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	cfg := buffer.Config{Dir: dir, SegmentBytes: 1 << 20, Fsync: buffer.FsyncBatch}
	cfg.SetDefaults()
	w, err := buffer.Open(cfg, []string{"sink"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for seq := 0; seq < 100_000; seq++ {
		if err := w.Append(context.Background(), seqBatch(seq, 20)); err != nil {
			fmt.Printf("E %v\n", err)
			if err := w.Append(context.Background(), seqBatch(seq+1, 20)); err != nil {
				fmt.Printf("F %v\n", err)
			}
			return
		}
		fmt.Printf("A %d\n", seq)
	}
}

// A write the disk refuses fails Append with the I/O error, every later Append fails too
// (the log does not write past a hole), and after a restart every acknowledged batch is
// there, in order, with the partial write at the tail truncated.
func TestAppendFailsCleanlyWhenWritesFail(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFullChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	acked, firstErr, laterErr := -1, "", ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "A "):
			seq, err := strconv.Atoi(line[2:])
			if err != nil || seq != acked+1 {
				t.Fatalf("child acknowledged %q after %d", line, acked)
			}
			acked = seq
		case strings.HasPrefix(line, "E "):
			firstErr = line[2:]
		case strings.HasPrefix(line, "F "):
			laterErr = line[2:]
		}
	}
	if firstErr == "" || acked < 10 {
		t.Fatalf("child acknowledged %d batches and reported no write error:\n%s\n%s", acked+1, out, stderr.String())
	}
	if !strings.Contains(firstErr, "file too large") {
		t.Errorf("the failed Append says %q; want the I/O error (file too large)", firstErr)
	}
	if laterErr == "" {
		t.Error("an Append after a failed write succeeded; it must fail until the log is reopened")
	}

	w, reg := openWAL(t, testConfig(t, func(c *buffer.Config) { c.Dir = dir; c.SegmentBytes = 1 << 20 }), "sink")
	assertSeqs(t, readSeqs(t, w.Reader("sink"), acked+1, false), seqRange(0, acked+1))
	assertNothingUnread(t, w.Reader("sink"))
	t.Logf("%d batches acknowledged before the write failed (%s); truncated %v bytes on reopen",
		acked+1, firstErr, metrictest.Sum(t, reg, "millwright_buffer_truncated_bytes_total"))
}

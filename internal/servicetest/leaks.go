package servicetest

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// RunWithLeakCheck runs the package's tests and then fails the run if any goroutine is left
// behind. Idle keep-alive connections of http.DefaultClient (used by this package's admin
// helpers) are closed first, so they do not count. Use it as a TestMain body:
//
//	func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }
func RunWithLeakCheck(m *testing.M) int {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	return code
}

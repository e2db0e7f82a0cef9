package influxdb

import (
	"os"
	"testing"

	"github.com/millwright-io/millwright/internal/servicetest"
)

// TestMain checks that the package's tests leave no goroutine behind.
func TestMain(m *testing.M) { os.Exit(servicetest.RunWithLeakCheck(m)) }

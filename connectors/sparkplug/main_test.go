package sparkplug

import (
	"os"
	"testing"

	"github.com/millwright-io/millwright/internal/servicetest"
)

func TestMain(m *testing.M) {
	os.Exit(servicetest.RunWithLeakCheck(m))
}

// Command bench measures the whole gateway: MQTT broker -> gateway -> InfluxDB, against a bare multi-writer InfluxDB client on the same server.
//
// It needs the services of deploy/services.sh (make bench-e2e starts them) and a built
// gateway binary. Steps:
//
//  1. Baseline: W concurrent writers of the official InfluxDB client send the same points,
//     already encoded as line protocol, in batches of 5,000: the server's ceiling.
//  2. Gateway: N QoS 1 messages (S signals each, so N·S points) are queued in the broker for
//     the gateway's persistent session while it is stopped; then the gateway is started
//     and timed until it has stored every point (its own points-out counter, then checked
//     with a count in InfluxDB). Its CPU time and peak RSS come from the kernel's rusage.
//
// Queuing first measures what the gateway can drain, not how fast one publisher publishes.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"

	"github.com/millwright-io/millwright/connectors/mqtt"
	"github.com/millwright-io/millwright/internal/servicetest"
)

func main() {
	gw := flag.String("gateway", "bin/millwright", "gateway binary (make build)")
	messages := flag.Int("messages", 250_000, "MQTT messages to drain")
	signals := flag.Int("signals", 4, "signals (points) per message")
	series := flag.Int("series", 300, "distinct machines")
	writers := flag.Int("writers", 8, "concurrent writers, for the baseline and the gateway's sink")
	connections := flag.Int("connections", 1, "MQTT connections of the gateway (shared subscription when > 1)")
	fsync := flag.String("fsync", "batch", "write-ahead log fsync policy")
	flag.Parse()
	if err := run(*gw, *messages, *signals, *series, *writers, *connections, *fsync); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(gw string, messages, signals, series, writers, connections int, fsync string) error {
	influx, mqttURL := servicetest.InfluxURL(), servicetest.MQTTURL()
	points := messages * signals
	base := time.Now().Add(-2 * time.Hour).UnixMilli()
	fmt.Printf("bench: %d messages x %d signals = %d points, %d machines, %d writers, fsync=%s, connections=%d\n",
		messages, signals, points, series, writers, fsync, connections)

	baseline, err := runBaseline(influx, messages, signals, series, writers, base)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	fmt.Printf("baseline  bare influxdb-client-go, %d writers: %8.0f points/s\n", writers, baseline)

	res, err := runGateway(gw, influx, mqttURL, messages, signals, series, writers, connections, fsync, base)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	rate := float64(points) / res.elapsed.Seconds()
	fmt.Printf("gateway   MQTT QoS1 -> WAL -> InfluxDB:    %8.0f points/s (%.0f msg/s), %.1f%% of the baseline\n",
		rate, float64(messages)/res.elapsed.Seconds(), 100*rate/baseline)
	fmt.Printf("gateway   CPU %.2f s per million points, peak RSS %.0f MB, drained in %.1f s\n",
		res.cpu.Seconds()/float64(points)*1e6, float64(res.maxRSSKB)/1024, res.elapsed.Seconds())
	return nil
}

func line(sb *strings.Builder, i, s, series int, base int64) {
	fmt.Fprintf(sb, "telemetry,factory=bench,machine=m%d,signal=s%d quality=\"good\",value=%d %d\n", i%series, s, i, (base+int64(i))*1e6)
}

func runBaseline(influx string, messages, signals, series, writers int, base int64) (float64, error) {
	db := servicetest.UniqueName("bench_base")
	if _, err := servicetest.InfluxQL(influx, "", "CREATE DATABASE "+db); err != nil {
		return 0, err
	}
	defer servicetest.InfluxQL(influx, "", "DROP DATABASE "+db)
	const batch = 5000
	var batches []string
	var sb strings.Builder
	n := 0
	for i := range messages {
		for s := range signals {
			line(&sb, i, s, series, base)
			if n++; n == batch {
				batches = append(batches, sb.String())
				sb.Reset()
				n = 0
			}
		}
	}
	if n > 0 {
		batches = append(batches, sb.String())
	}
	client := influxdb2.NewClientWithOptions(influx, "", influxdb2.DefaultOptions().SetHTTPRequestTimeout(60))
	defer client.Close()
	api := client.WriteAPIBlocking("", db)
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for b := range work {
				if err := api.WriteRecord(context.Background(), b); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		})
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(messages*signals) / elapsed.Seconds(), nil
}

type gatewayResult struct {
	elapsed  time.Duration
	cpu      time.Duration
	maxRSSKB int64
}

func runGateway(gw, influx, mqttURL string, messages, signals, series, writers, connections int, fsync string, base int64) (gatewayResult, error) {
	db := servicetest.UniqueName("bench_gw")
	if _, err := servicetest.InfluxQL(influx, "", "CREATE DATABASE "+db); err != nil {
		return gatewayResult{}, err
	}
	defer servicetest.InfluxQL(influx, "", "DROP DATABASE "+db)
	dir, err := os.MkdirTemp("", "millwright-bench-")
	if err != nil {
		return gatewayResult{}, err
	}
	defer os.RemoveAll(dir)
	root := servicetest.UniqueName("bench")
	httpAddr := "127.0.0.1:19273"
	cfgPath := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`
gateway: {factory: bench, state_dir: %q, http: {listen: %q, pprof: true}, log: {level: warn}}
buffer: {fsync: %s}
sources:
  - name: broker
    mqtt:
      servers: [%q]
      client_id: %s
      connections: %d
      topics: [{pattern: "%s/{machine}", qos: 1}]
sinks:
  - name: influx
    influxdb: {url: %q, bucket: %q, writers: %d, batch_points: 5000, flush_interval: 100ms}
`, dir, httpAddr, fsync, mqttURL, root, connections, root, influx, db, writers)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return gatewayResult{}, err
	}

	// Create the persistent session (and its subscription), then stop the gateway.
	first, err := startGateway(gw, cfgPath, httpAddr)
	if err != nil {
		return gatewayResult{}, err
	}
	if _, err := stopGateway(first); err != nil {
		return gatewayResult{}, err
	}

	pub, err := mqtt.NewPublisher(mqtt.PublisherConfig{Server: mqttURL, ClientID: root + "-pub", QoS: 1, MaxInflight: 2000})
	if err != nil {
		return gatewayResult{}, err
	}
	ctx := context.Background()
	if err := pub.Connect(ctx); err != nil {
		return gatewayResult{}, err
	}
	pubStart := time.Now()
	var payload []byte
	for i := range messages {
		payload = fmt.Appendf(payload[:0], `{"ts": %d`, base+int64(i))
		for s := range signals {
			payload = fmt.Appendf(payload, `, "s%d": %d`, s, i)
		}
		payload = append(payload, '}')
		if err := pub.Publish(ctx, fmt.Sprintf("%s/m%d", root, i%series), append([]byte(nil), payload...), nil); err != nil {
			return gatewayResult{}, err
		}
	}
	if err := pub.Flush(ctx); err != nil {
		return gatewayResult{}, err
	}
	pub.Close()
	fmt.Printf("queued    %d messages in the broker in %.1f s\n", messages, time.Since(pubStart).Seconds())

	want := float64(messages * signals)
	start := time.Now()
	cmd, err := startGateway(gw, cfgPath, httpAddr)
	if err != nil {
		return gatewayResult{}, err
	}
	for {
		out, err := scrape(httpAddr, "millwright_points_out_total")
		if err == nil && out >= want {
			break
		}
		if time.Since(start) > 10*time.Minute {
			stopGateway(cmd)
			return gatewayResult{}, fmt.Errorf("gateway stored %v of %v points in 10 minutes", out, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	// Peak RSS from the kernel's high-water mark of the gateway's own address space. (The
	// rusage of a child also counts the forking parent's peak, folded in at exec.)
	hwm, err := peakRSSKB(cmd.Process.Pid)
	if err != nil {
		stopGateway(cmd)
		return gatewayResult{}, err
	}
	ru, err := stopGateway(cmd)
	if err != nil {
		return gatewayResult{}, err
	}
	n, err := servicetest.Count(influx, db, `SELECT count("value") FROM "telemetry"`)
	if err != nil {
		return gatewayResult{}, err
	}
	if float64(n) != want {
		return gatewayResult{}, fmt.Errorf("InfluxDB holds %d points, want %v", n, want)
	}
	return gatewayResult{
		elapsed:  elapsed,
		cpu:      time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		maxRSSKB: hwm,
	}, nil
}

func startGateway(bin, cfgPath, httpAddr string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, nil
			}
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, fmt.Errorf("gateway did not become ready")
}

func stopGateway(cmd *exec.Cmd) (*syscall.Rusage, error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("gateway exited: %w", err)
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru == nil {
		return nil, fmt.Errorf("no rusage")
	}
	return ru, nil
}

// peakRSSKB reads VmHWM, the peak resident set size, from /proc.
func peakRSSKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// scrape returns the sum of every series of a metric on the gateway's /metrics.
func scrape(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			if f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
				sum += f
			}
		}
	}
	return sum, sc.Err()
}

// Command opcua measures the OPC-UA source under load: node-opcua with N changing items -> source -> pipeline (write-ahead log) -> a counting sink.
//
// It starts a private node-opcua (deploy/opcua/server.js, with the node_modules that
// deploy/services.sh installs: source .services/env first) with -items Double variables that
// all change every -interval, raises its per-publish notification limit to fit them all,
// discovers them by browsing and subscribes with that publishing and sampling interval.
// After a warm-up it measures for -duration: values per second delivered into the pipeline
// (appended to the write-ahead log and acknowledged), the gateway side's CPU time and RSS
// (this process, from /proc/self), and node-opcua's CPU time (from /proc/<pid>), which tells
// which side limits. Numbers are printed, never asserted.
//
//	go run ./bench/opcua -items 10000 -interval 100ms
//	go run ./bench/opcua -items 50000 -interval 1s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/millwright-io/millwright/connectors"
	"github.com/millwright-io/millwright/connectors/opcua"
	"github.com/millwright-io/millwright/gateway/buffer"
	"github.com/millwright-io/millwright/gateway/config"
	"github.com/millwright-io/millwright/gateway/pipeline"
	"github.com/millwright-io/millwright/gateway/telemetry"
	"github.com/millwright-io/millwright/internal/servicetest"
)

type options struct {
	items            int
	interval         time.Duration
	warmup, duration time.Duration
	policy, mode     string
	maxNotifications int
	fsync            string
	pipeline         bool
	queue            uint32
	notifQueue       int
	memProfile       string
	servers          int
}

func main() {
	var o options
	flag.IntVar(&o.items, "items", 10000, "monitored items (node-opcua Doubles that change every interval)")
	flag.DurationVar(&o.interval, "interval", 100*time.Millisecond, "publishing and sampling interval, and node-opcua's update period")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "time after the subscription is complete before measuring")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measurement window")
	flag.StringVar(&o.policy, "policy", "None", "security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss")
	flag.StringVar(&o.mode, "mode", "", "security mode: None, Sign, SignAndEncrypt (default: None with policy None, else SignAndEncrypt)")
	var queue uint
	flag.UintVar(&queue, "queue", 10, "monitored items' queue size: the samples an item keeps between two publish responses")
	flag.IntVar(&o.maxNotifications, "max-notifications", 0, "per-publish notification limit, asked by the client and allowed by node-opcua (default items x queue)")
	flag.StringVar(&o.fsync, "fsync", buffer.FsyncBatch, "write-ahead log fsync policy: batch, interval or off")
	flag.BoolVar(&o.pipeline, "pipeline", true, "run the pipeline with its write-ahead log; false: read and acknowledge the source directly")
	flag.IntVar(&o.notifQueue, "notification-queue", 0, "the source's notification_queue: publish responses held before Read (default the source's)")
	flag.IntVar(&o.servers, "servers", 1, "node-opcua processes sharing the items (one source each), to offer more than one Node.js thread can")
	flag.StringVar(&o.memProfile, "memprofile", "", "write a heap profile of the gateway side to this file at the end")
	flag.Parse()
	o.queue = uint32(queue)
	if o.servers < 1 || o.servers > o.items {
		fmt.Fprintf(os.Stderr, "bench/opcua: -servers %d: expected 1 to -items\n", o.servers)
		os.Exit(2)
	}
	if o.maxNotifications == 0 {
		o.maxNotifications = o.items * int(o.queue)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/opcua:", err)
		os.Exit(1)
	}
}

// countingSource counts the points of the batches the pipeline acknowledged as durable, and
// reports how long its first Connect (browse and subscribe) took.
type countingSource struct {
	connectors.Source
	acked     atomic.Int64
	connected chan time.Duration // receives the first successful Connect's duration
	once      atomic.Bool
}

func (c *countingSource) Connect(ctx context.Context) error {
	t0 := time.Now()
	err := c.Source.Connect(ctx)
	if err == nil && c.once.CompareAndSwap(false, true) {
		c.connected <- time.Since(t0)
	}
	return err
}

func (c *countingSource) Read(ctx context.Context) (telemetry.Batch, connectors.AckFunc, error) {
	b, ack, err := c.Source.Read(ctx)
	if err != nil {
		return b, ack, err
	}
	n := int64(len(b.Points))
	return b, func(ctx context.Context, err error) {
		if err == nil {
			c.acked.Add(n)
		}
		ack(ctx, err)
	}, nil
}

// discardSink stores nothing and counts what it was given.
type discardSink struct{ points atomic.Int64 }

func (d *discardSink) Connect(context.Context) error { return nil }
func (d *discardSink) Close(context.Context) error   { return nil }
func (d *discardSink) Write(_ context.Context, b telemetry.Batch) error {
	d.points.Add(int64(len(b.Points)))
	return nil
}
func (d *discardSink) BatchPolicy() (int, time.Duration) { return 20000, 50 * time.Millisecond }

func run(o options) error {
	dir, err := os.MkdirTemp("", "bench-opcua-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	fmt.Printf("bench/opcua: %d items at %s (%.0f values/s offered) from %d node-opcua server(s), queue %d, %d notifications/publish, policy %s, pipeline=%v fsync=%s, GOMAXPROCS=%d\n",
		o.items, o.interval, float64(o.items)/o.interval.Seconds(), o.servers, o.queue, o.maxNotifications, o.policy, o.pipeline, o.fsync, runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// One server and one source per share of the items.
	var (
		servers []*servicetest.NodeOPCUA
		sources []*countingSource
		raw     []*opcua.Source
	)
	for k := range o.servers {
		share := o.items / o.servers
		if k < o.items%o.servers {
			share++
		}
		srv, err := servicetest.NewNodeOPCUA(servicetest.NodeOPCUAOptions{
			Machines: 1, Items: share, Interval: o.interval, MaxNotifications: o.maxNotifications,
			Dir: fmt.Sprintf("%s/node-opcua-%d", dir, k),
		})
		if err != nil {
			return err
		}
		defer srv.Close()
		t0 := time.Now()
		if err := srv.Start(ctx); err != nil {
			return err
		}
		fmt.Printf("node-opcua: %d items at %s after %.1fs (pid %d)\n", share, srv.URL, time.Since(t0).Seconds(), srv.PID())
		servers = append(servers, srv)

		cfg := opcua.Config{
			Endpoint:       srv.URL,
			SecurityPolicy: o.policy,
			SecurityMode:   o.mode,
			PKI:            opcua.PKI{Dir: fmt.Sprintf("%s/pki-%d", dir, k), TrustOnFirstUse: true},
			ConnectTimeout: 2 * time.Minute,
			RequestTimeout: 30 * time.Second,
			Subscription: opcua.Subscription{
				PublishingInterval:         o.interval,
				MaxNotificationsPerPublish: uint32(o.maxNotifications),
				Monitoring:                 opcua.Monitoring{SamplingInterval: o.interval, QueueSize: o.queue},
			},
			NotificationQueue: o.notifQueue,
			Browse:            []opcua.Browse{{Include: []string{"Load/*/*"}, MaxItems: share, MaxDepth: 3}},
			Mapping:           []opcua.Rule{{Match: `^Load/(?P<machine>[^/]+)/(?P<signal>[^/]+)$`, Line: fmt.Sprintf("server%d", k)}},
		}
		if o.policy != "None" {
			cfg.Auth = opcua.Auth{Type: opcua.AuthUsername, Username: srv.User, Password: config.NewSecret(srv.Password)}
		}
		source, err := opcua.New(fmt.Sprintf("bench%d", k), cfg, connectors.Env{Logger: log})
		if err != nil {
			return err
		}
		raw = append(raw, source)
		sources = append(sources, &countingSource{Source: source, connected: make(chan time.Duration, 1)})
	}

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, len(sources))
	if o.pipeline {
		wcfg := buffer.Config{Dir: dir + "/wal", Fsync: o.fsync}
		wcfg.SetDefaults()
		wal, err := buffer.Open(wcfg, []string{"discard"})
		if err != nil {
			return err
		}
		defer wal.Close()
		var ps []pipeline.Source
		for k, src := range sources {
			ps = append(ps, pipeline.Source{Name: fmt.Sprintf("opcua%d", k), Source: src})
		}
		eng, err := pipeline.New(wal, ps,
			[]pipeline.Sink{{Name: "discard", Sink: &discardSink{}, Cursor: wal.Reader("discard")}},
			pipeline.Options{Logger: log, Factory: "bench"})
		if err != nil {
			return err
		}
		go func() { done <- eng.Run(runCtx) }()
	} else {
		for _, src := range sources {
			go func() {
				if err := src.Connect(runCtx); err != nil {
					done <- err
					return
				}
				done <- readDirect(runCtx, src)
			}()
		}
	}
	for k, src := range sources {
		select {
		case d := <-src.connected:
			fmt.Printf("source %d: browsed and subscribed %d items in %.1fs\n", k, len(raw[k].Items()), d.Seconds())
		case err := <-done:
			return fmt.Errorf("stopped before connecting: %v", err)
		case <-ctx.Done():
			return errors.New("the sources did not connect within 3 minutes")
		}
	}
	items := 0
	for _, r := range raw {
		items += len(r.Items())
	}
	if items != o.items {
		return fmt.Errorf("subscribed %d items, want %d", items, o.items)
	}

	acked := func() int64 {
		var n int64
		for _, src := range sources {
			n += src.acked.Load()
		}
		return n
	}
	nodeCPU := func() time.Duration {
		var d time.Duration
		for _, srv := range servers {
			d += usage(srv.PID()).CPU
		}
		return d
	}
	time.Sleep(o.warmup)
	a0, self0, node0 := acked(), usage(0), nodeCPU()
	t0 := time.Now()
	time.Sleep(o.duration)
	a1, self1, node1 := acked(), usage(0), nodeCPU()
	elapsed := time.Since(t0).Seconds()
	var nodeRSS int64
	for _, srv := range servers {
		nodeRSS += usage(srv.PID()).RSS
	}
	stop()
	workers := len(sources) // goroutines that report on done
	if o.pipeline {
		workers = 1
	}
	for range workers {
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, src := range sources {
		_ = src.Close(context.Background())
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if o.memProfile != "" {
		f, err := os.Create(o.memProfile)
		if err != nil {
			return err
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
		f.Close()
	}
	rate := float64(a1-a0) / elapsed
	offered := float64(o.items) / o.interval.Seconds()
	gwCores := (self1.CPU - self0.CPU).Seconds() / elapsed
	nodeCores := (node1 - node0).Seconds() / elapsed
	every := (time.Duration(float64(o.items) / rate * float64(time.Second))).Round(time.Millisecond)
	fmt.Printf("delivered:   %.0f values/s into the pipeline (%.1f%% of the %.0f offered) over %.1fs: each item every %s on average (asked %s)\n",
		rate, 100*rate/offered, offered, elapsed, every, o.interval)
	fmt.Printf("gateway:     %.2f cores, RSS %.0f MB (peak %.0f MB), Go heap %.0f MB, %d GCs\n",
		gwCores, mb(self1.RSS), mb(self1.HWM), mb(int64(ms.HeapInuse)), ms.NumGC)
	fmt.Printf("node-opcua:  %.2f cores, RSS %.0f MB (%d process(es))\n", nodeCores, mb(nodeRSS), len(servers))
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("host:        %d CPUs, load average %s (other processes compete for the CPUs when it exceeds them)\n", runtime.NumCPU(), strings.Join(strings.Fields(string(la))[:3], " "))
	}
	if gwCores > 0 {
		fmt.Printf("efficiency:  %.0f values/s per gateway core\n", rate/gwCores)
	}
	switch {
	case rate >= 0.98*offered:
		fmt.Println("limit:       none reached: every offered value was delivered")
	case gwCores < nodeCores/2:
		fmt.Printf("limit:       the server side: node-opcua sampled each item every %s instead of %s, using %.2f cores; the gateway used %.2f\n",
			every, o.interval, nodeCores, gwCores)
	default:
		fmt.Printf("limit:       the gateway side (%.2f cores against node-opcua's %.2f)\n", gwCores, nodeCores)
	}
	return nil
}

// readDirect reads and acknowledges the source without the pipeline.
func readDirect(ctx context.Context, s connectors.Source) error {
	for {
		_, ack, err := s.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ack(ctx, nil)
	}
}

func usage(pid int) servicetest.ProcUsage {
	u, err := servicetest.ReadProcUsage(pid)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/opcua: /proc:", err)
	}
	return u
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

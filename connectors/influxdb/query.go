package influxdb

import (
	"context"
	"fmt"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
)

// Querier runs Flux queries against the InfluxDB a sink writes to. The demo and the tools
// use it to read back what the gateway stored. InfluxDB 1.8's Flux is slow on wide queries:
// keep queries narrow (one machine, a short range); each is bounded by the config's timeout.
type Querier struct {
	client influxdb2.Client
	cfg    Config
}

// NewQuerier builds a querier for the server cfg names. It does no I/O.
func NewQuerier(cfg Config) (*Querier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("influxdb querier: %w", err)
	}
	tlsCfg, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("influxdb querier: %w", err)
	}
	opts := influxdb2.DefaultOptions().SetHTTPRequestTimeout(uint(cfg.Timeout.Seconds() + 0.5))
	if tlsCfg != nil {
		opts.SetTLSConfig(tlsCfg)
	}
	return &Querier{client: influxdb2.NewClientWithOptions(cfg.URL, cfg.Token.Value(), opts), cfg: cfg}, nil
}

// Query runs flux and calls fn with the values of every record, in order. An error from fn
// stops the query and is returned.
func (q *Querier) Query(ctx context.Context, flux string, fn func(values map[string]any) error) error {
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	res, err := q.client.QueryAPI(q.cfg.Org).Query(ctx, flux)
	if err != nil {
		return fmt.Errorf("flux query on %s: %w", q.cfg.URL, err)
	}
	defer res.Close()
	for res.Next() {
		if err := fn(res.Record().Values()); err != nil {
			return err
		}
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("flux query on %s: %w", q.cfg.URL, err)
	}
	return nil
}

// Close releases the client's connections.
func (q *Querier) Close() { q.client.Close() }

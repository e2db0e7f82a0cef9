// Package natsbus carries the federation round protocol over NATS JetStream, and is the
// only importer of the NATS client and server libraries.
//
// Threat model: the NATS server authenticates every factory by its credentials (and TLS),
// puts it in an account of its own and enforces subject permissions (FactoryPermissions).
// The hub's account alone holds JetStream; a factory's account imports from it only what
// the factory may use (accounts.go): the server checks a request's subject against the
// permissions but never its reply subject, and in one shared account JetStream stored its
// answer wherever a factory's reply subject pointed. A factory publishes updates only
// under its own name, reads only its federations' models and round state, message by
// message (it creates no consumers: a push consumer delivers wherever its creator says),
// and receives only on its own inbox prefix and its federations' round-state notices. What
// a factory can make the hub keep is bounded per factory: the update stream keeps its
// latest UpdatesPerMember messages. The embedded server can hold bcrypt hashes of the factories'
// passwords instead of the passwords, and a site's leaf node verifies the hub's certificate
// (and shows its own) on its link. Nothing here checks message contents: the round protocol
// (package federation) verifies every signature, hash and binding to a round, so a
// compromised server can delay, drop or replay messages but not forge them.
package natsbus

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millwright-io/millwright/federation"
)

// Bus is a connection to NATS implementing federation.Transport.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	domain string // the hub's JetStream domain, for a client behind a leaf node ("" on a direct connection)
	log    *slog.Logger

	mu      sync.Mutex
	objs    map[string]jetstream.ObjectStore
	streams map[string]jetstream.Stream   // by stream name: object stores' (direct gets) and the update streams (purges)
	kvs     map[string]jetstream.KeyValue // by bucket name
	timeout time.Duration
	closed  chan struct{} // closed by the client library when the connection is closed
	// read records, by federation and round, what Updates saw of the update stream, for
	// DeleteUpdates.
	read map[string]map[uint64]*roundSeqs
	// cleanup runs the deletions of stopped update consumers (Updates); Close waits for it.
	cleanup sync.WaitGroup
}

var _ federation.Transport = (*Bus)(nil)

// ErrNotPermitted is returned when the server refused to look up a federation's bucket
// because the user may not read it: the federation is not in the user's list, or does not
// exist (permissions are granted per federation name, so an unknown name is refused too).
var ErrNotPermitted = errors.New("natsbus: not permitted")

// Dial connects with cfg (defaults set, valid).
func Dial(ctx context.Context, cfg ClientConfig, log *slog.Logger) (*Bus, error) {
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.Name("millwright " + cfg.User),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats async error", "err", err)
		}),
	}
	if cfg.OnLink != nil {
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { cfg.OnLink(false) }),
			nats.ReconnectHandler(func(*nats.Conn) { cfg.OnLink(true) }))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password.Value()), nats.CustomInboxPrefix(inboxPrefix(cfg.User)))
	}
	if cfg.inProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.inProcess))
		if strings.HasPrefix(cfg.inProcess.ClientURL(), "tls://") {
			// An in-memory pipe to our own server: there is no network to authenticate.
			opts = append(opts, nats.Secure(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})) //nolint:gosec
		}
	}
	tc, err := cfg.TLS.Load()
	if err != nil {
		return nil, fmt.Errorf("natsbus: tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: connect %s: %w", cfg.URL, err)
	}
	var js jetstream.JetStream
	if cfg.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	return &Bus{nc: nc, js: js, domain: cfg.Domain, log: log, objs: map[string]jetstream.ObjectStore{}, streams: map[string]jetstream.Stream{},
		kvs: map[string]jetstream.KeyValue{}, read: map[string]map[uint64]*roundSeqs{}, timeout: cfg.Timeout, closed: closed}, nil
}

// Close drains the connection (pending publishes are flushed) and waits until it is
// closed, at most the configured timeout.
func (b *Bus) Close() error {
	b.cleanup.Wait()
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
		return err
	}
	select {
	case <-b.closed:
	case <-time.After(b.timeout):
		b.nc.Close()
		<-b.closed
	}
	return nil
}

// EnsureFederation creates (or updates) the JetStream assets of fed: the update stream
// (one subject per member, the only subjects updates are stored under, each keeping the
// member's UpdatesPerMember latest messages), the model
// object store, the round-state KV bucket (which announces each state it has stored on
// roundNotice) and the hub's private bucket. Only the hub's
// credentials may do this. maxAge bounds how long updates are kept.
func (b *Bus) EnsureFederation(ctx context.Context, fed string, members []string, maxAge time.Duration) error {
	subjects := make([]string, 0, len(members))
	for _, m := range members {
		subjects = append(subjects, updateSubject(fed, m))
	}
	if _, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: updateStream(fed), Subjects: subjects,
		Storage: jetstream.FileStorage, MaxAge: maxAge, Discard: jetstream.DiscardOld,
		MaxMsgSize: 8 << 20, MaxMsgsPerSubject: UpdatesPerMember,
	}); err != nil {
		return fmt.Errorf("natsbus: update stream of %s: %w", fed, err)
	}
	for _, bucket := range []string{modelBucket(fed), hubBucket(fed)} {
		if _, err := b.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket, Storage: jetstream.FileStorage}); err != nil {
			return fmt.Errorf("natsbus: object store %s: %w", bucket, err)
		}
	}
	if _, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: roundBucket(fed), History: 8, Storage: jetstream.FileStorage,
		RePublish: &jetstream.RePublish{Source: roundStateSubject(fed), Destination: roundNotice(fed)}}); err != nil {
		return fmt.Errorf("natsbus: kv %s: %w", roundBucket(fed), err)
	}
	if _, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: receiptBucket(fed), History: 1, Storage: jetstream.FileStorage}); err != nil {
		return fmt.Errorf("natsbus: kv %s: %w", receiptBucket(fed), err)
	}
	for _, s := range []string{"OBJ_" + modelBucket(fed), "KV_" + roundBucket(fed)} {
		if err := b.limitConsumers(ctx, s); err != nil {
			return fmt.Errorf("natsbus: consumer limits of %s: %w", s, err)
		}
	}
	return nil
}

// ConsumerIdle is the longest a consumer on a stream the factories may read (the model
// store and the round state) lives without a reader: the server drops each once it has been
// idle this long instead of keeping it for good, and refuses one asking for longer. The
// factories may not create consumers (FactoryPermissions); the limit bounds those made
// before they lost the right, and any made with other credentials.
const ConsumerIdle = 5 * time.Minute

// limitConsumers sets ConsumerIdle as the inactivity limit of stream's consumers (the
// object store and KV configurations do not carry it: updating the bucket, as
// EnsureFederation does first, removes it), then bounds the consumers created while there
// was none. The server refuses the limit while a consumer asks for a longer one, and a
// durable consumer created without it never expires.
func (b *Bus) limitConsumers(ctx context.Context, stream string) error {
	st, err := b.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.ConsumerLimits.InactiveThreshold != ConsumerIdle {
		cfg.ConsumerLimits.InactiveThreshold = ConsumerIdle
		// Another unbounded consumer can be made until the limit is in place.
		for attempt := 0; ; attempt++ {
			if err = b.boundConsumers(ctx, st); err != nil {
				return err
			}
			if _, err = b.js.UpdateStream(ctx, cfg); err == nil || attempt == 2 {
				break
			}
		}
		if err != nil {
			return err
		}
	}
	return b.boundConsumers(ctx, st)
}

// boundConsumers deletes every consumer of st that delivers to a subject other than an
// inbox (a stream's subject keeps it busy, and the stream stores what it delivers), and
// gives every other one that is never dropped when idle, or only after more than
// ConsumerIdle, the limit ConsumerIdle (it is deleted if it cannot be updated). Factories
// may no longer create consumers (FactoryPermissions); these are ones made before.
func (b *Bus) boundConsumers(ctx context.Context, st jetstream.Stream) error {
	name := st.CachedInfo().Config.Name
	cl := st.ListConsumers(ctx)
	for info := range cl.Info() {
		c := info.Config
		pushed := c.DeliverSubject != "" && !strings.HasPrefix(c.DeliverSubject, "_INBOX")
		if !pushed && c.InactiveThreshold > 0 && c.InactiveThreshold <= ConsumerIdle {
			continue
		}
		c.InactiveThreshold = ConsumerIdle
		if !pushed {
			if _, err := b.js.UpdateConsumer(ctx, name, c); err == nil {
				continue
			}
		}
		if err := b.js.DeleteConsumer(ctx, name, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("consumer %s: %w", info.Name, err)
		}
	}
	return cl.Err()
}

// api is the JetStream API's subject prefix, with the domain if there is one.
func (b *Bus) api() string {
	if b.domain != "" {
		return "$JS." + b.domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// bounded returns ctx limited to the configured request timeout.
func (b *Bus) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.timeout)
}

// DeleteFederation removes every JetStream asset of fed (hub credentials only): its update
// stream, its models and the hub's objects, its round state and versions, and its
// receipts. What is already gone is no error.
func (b *Bus) DeleteFederation(ctx context.Context, fed string) error {
	streams := federationStreams(fed)
	b.mu.Lock()
	delete(b.kvs, roundBucket(fed))
	delete(b.kvs, receiptBucket(fed))
	delete(b.objs, modelBucket(fed))
	delete(b.objs, hubBucket(fed))
	for _, s := range streams {
		delete(b.streams, s)
	}
	delete(b.read, fed)
	b.mu.Unlock()
	var errs []error
	for _, s := range streams {
		if err := b.js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("natsbus: delete %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

func (b *Bus) obj(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.objs[bucket]; ok {
		return o, nil
	}
	o, err := b.js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("natsbus: object store %s: %w", bucket, federation.ErrNotFound)
	}
	if err != nil && b.denied("OBJ_"+bucket) {
		return nil, fmt.Errorf("natsbus: object store %s: %w", bucket, ErrNotPermitted)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: object store %s: %w", bucket, err)
	}
	b.objs[bucket] = o
	return o, nil
}

// kv returns the KV bucket named bucket (cached).
func (b *Bus) kv(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.kvs[bucket]; ok {
		return k, nil
	}
	k, err := b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("natsbus: kv %s: %w", bucket, federation.ErrNotFound)
	}
	if err != nil && b.denied("KV_"+bucket) {
		return nil, fmt.Errorf("natsbus: kv %s: %w", bucket, ErrNotPermitted)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: kv %s: %w", bucket, err)
	}
	b.kvs[bucket] = k
	return k, nil
}

// denied reports whether the server refused this connection a JetStream API request on
// stream: it drops a request the user may not publish and says so only in an error on the
// connection (LastError), so the request itself ends in a timeout.
func (b *Bus) denied(stream string) bool { return b.refused("." + stream + `"`) }

// deniedSubject reports whether the server refused this connection a publish to subject,
// as denied does.
func (b *Bus) deniedSubject(subject string) bool { return b.refused(`"` + subject + `"`) }

// refused reports whether the connection's last error is a permission violation whose
// text holds quoted.
func (b *Bus) refused(quoted string) bool {
	err := b.nc.LastError()
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), quoted)
}

// PutModel implements federation.Transport: the object's name is hash, and its digest the
// SHA-256 hash names.
func (b *Bus) PutModel(ctx context.Context, fed, hash string, data []byte) error {
	var sum [sha256.Size]byte
	ok := len(hash) == hex.EncodedLen(sha256.Size) && hash == strings.ToLower(hash) // sum has room
	if ok {
		_, err := hex.Decode(sum[:], []byte(hash))
		ok = err == nil
	}
	if !ok {
		return fmt.Errorf("natsbus: put model %s: hash %q is not a lower-case hex SHA-256", fed, hash)
	}
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	o, err := b.obj(ctx, modelBucket(fed))
	if err != nil {
		return err
	}
	info, err := o.GetInfo(ctx, hash)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("natsbus: put model %s/%s: %w", fed, hash, err)
	}
	if err != nil || info.Size != uint64(len(data)) {
		if err := b.putObject(ctx, modelBucket(fed), hash, data, sum, info); err != nil {
			return fmt.Errorf("natsbus: put model %s/%s: %w", fed, hash, err)
		}
	}
	return nil
}

// maxChunk bounds the chunks objects are stored in: large chunks make a model a few
// messages (the object store's default is 128 kB), below the server's max_payload.
const maxChunk = 1 << 20

// putObject stores data, whose SHA-256 is sum, under name in bucket, in the object store's
// format (jetstream.ObjectStore reads it): chunks of up to maxChunk bytes (less when the
// server's max_payload is smaller) on a fresh NUID's subject, published without waiting
// for each acknowledgement, then the metadata, which rolls up the name's earlier metadata;
// then the chunks of prev (the name's object before, nil if none) are purged. It is
// ObjectStore.Put without the work that costs more than the transfer of a model: a second
// metadata lookup, a second SHA-256 of the data, a copy of every chunk and a reply
// subscription per call.
func (b *Bus) putObject(ctx context.Context, bucket, name string, data []byte, sum [sha256.Size]byte, prev *jetstream.ObjectInfo) error {
	chunk := int(max(min(int64(maxChunk), b.nc.MaxPayload()-4096, int64(len(data))), 4096))
	id := strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix) // a NUID
	chunkSubj := chunkSubject(bucket, id)
	acks := make([]jetstream.PubAckFuture, 0, (len(data)+chunk-1)/chunk)
	var err error
	for off := 0; off < len(data) && err == nil; off += chunk {
		var f jetstream.PubAckFuture
		if f, err = b.js.PublishMsgAsync(&nats.Msg{Subject: chunkSubj, Data: data[off:min(off+chunk, len(data))]}); err == nil {
			acks = append(acks, f)
		}
	}
	for _, f := range acks {
		if err != nil {
			break
		}
		select {
		case <-f.Ok():
		case err = <-f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		var meta []byte
		meta, err = json.Marshal(jetstream.ObjectInfo{
			ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunk)}},
			Bucket:     bucket, NUID: id, Size: uint64(len(data)), Chunks: uint32(len(acks)),
			Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]),
		})
		if err == nil {
			m := nats.NewMsg(metaSubject(bucket, name))
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
			m.Data = meta
			_, err = b.js.PublishMsg(ctx, m)
		}
	}
	st, serr := b.objStream(ctx, bucket)
	if err != nil {
		if serr == nil { // best effort: the chunks no metadata names
			_ = st.Purge(ctx, jetstream.WithPurgeSubject(chunkSubj))
		}
		return err
	}
	if prev != nil && !prev.Deleted && prev.NUID != "" && serr == nil {
		_ = st.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(bucket, prev.NUID))) // unreachable now; best effort
	}
	return nil
}

// GetModel implements federation.Transport. The content is not hashed here: the caller
// checks that it hashes to hash, as the Transport contract says.
func (b *Bus) GetModel(ctx context.Context, fed, hash string) ([]byte, error) {
	return b.getObject(ctx, modelBucket(fed), hash, false, federation.MaxModelBytes)
}

// DeleteModel implements federation.Transport. It purges the object's metadata, so that it
// reads as not found at once, then its chunks. Unlike the object store's own Delete it
// leaves no deletion marker behind: a federation that deletes a model every round keeps
// its bucket bounded.
func (b *Bus) DeleteModel(ctx context.Context, fed, hash string) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	bucket := modelBucket(fed)
	o, err := b.obj(ctx, bucket)
	if err != nil {
		return err
	}
	info, err := o.GetInfo(ctx, hash, jetstream.GetObjectInfoShowDeleted())
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natsbus: delete model %s/%s: %w", fed, hash, err)
	}
	st, err := b.objStream(ctx, bucket)
	if err != nil {
		return err
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(metaSubject(bucket, hash))); err != nil {
		return fmt.Errorf("natsbus: delete model %s/%s: %w", fed, hash, err)
	}
	if info.NUID != "" {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(chunkSubject(bucket, info.NUID))); err != nil {
			return fmt.Errorf("natsbus: delete model %s/%s: chunks: %w", fed, hash, err)
		}
	}
	return nil
}

// metaSubject and chunkSubject are the object store's subjects of an object's metadata
// (by its name) and of its chunks (by the object's NUID).
func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

func chunkSubject(bucket, nuid string) string { return "$O." + bucket + ".C." + nuid }

// PutBlob implements federation.Transport in a bucket only the hub can read.
func (b *Bus) PutBlob(ctx context.Context, fed, name string, data []byte) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	o, err := b.obj(ctx, hubBucket(fed))
	if err != nil {
		return err
	}
	prev, err := o.GetInfo(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("natsbus: put %s/%s: %w", hubBucket(fed), name, err)
	}
	if err := b.putObject(ctx, hubBucket(fed), name, data, sha256.Sum256(data), prev); err != nil {
		return fmt.Errorf("natsbus: put %s/%s: %w", hubBucket(fed), name, err)
	}
	return nil
}

// GetBlob implements federation.Transport; the content is checked against the digest
// stored with it.
func (b *Bus) GetBlob(ctx context.Context, fed, name string) ([]byte, error) {
	return b.getObject(ctx, hubBucket(fed), name, true, maxBlob)
}

// getObject reads an object: its metadata, then its chunks with JetStream direct gets
// (the object store's own reader creates a consumer for every read, which costs more
// than the transfer of a model of a few chunks), checking the digest when verify is set.
// An object whose metadata says it holds more than limit bytes is refused unread.
func (b *Bus) getObject(ctx context.Context, bucket, name string, verify bool, limit uint64) ([]byte, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	o, err := b.obj(ctx, bucket)
	if err != nil {
		return nil, err
	}
	info, err := o.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("natsbus: %s/%s: %w", bucket, name, federation.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: get %s/%s: %w", bucket, name, err)
	}
	if info.Opts != nil && info.Opts.Link != nil { // never made by this package
		return nil, fmt.Errorf("natsbus: get %s/%s: object is a link", bucket, name)
	}
	if info.Size > limit {
		return nil, fmt.Errorf("natsbus: get %s/%s: its metadata says %d bytes; expected at most %d", bucket, name, info.Size, limit)
	}
	st, err := b.objStream(ctx, bucket)
	if err != nil {
		return nil, err
	}
	data, err := readChunks(ctx, st, chunkSubject(bucket, info.NUID), info.Size)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// A delete removes the metadata first, then the chunks: one that ran during this
		// read has made the object not found, which is what the caller gets.
		if _, ierr := o.GetInfo(ctx, name); errors.Is(ierr, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("natsbus: %s/%s deleted while it was read: %w", bucket, name, federation.ErrNotFound)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: get %s/%s: %w", bucket, name, err)
	}
	if verify {
		sum := sha256.Sum256(data)
		if want := "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]); info.Digest != want {
			return nil, fmt.Errorf("natsbus: get %s/%s: digest %s, stored %s", bucket, name, want, info.Digest)
		}
	}
	return data, nil
}

// Bounds of the objects getObject reads. A blob holds the hub's release of a round with
// its server optimizer's state, as JSON: a few GiB for the largest model. What a reader
// reserves before the chunks arrive is bounded apart from that: the size is the
// metadata's claim.
const (
	maxBlob  = 1 << 31
	reserved = 64 << 20
)

// readChunks reads the size bytes stored in the messages of subject, in order.
func readChunks(ctx context.Context, st jetstream.Stream, subject string, size uint64) ([]byte, error) {
	if size > math.MaxInt { // getObject bounded it; this bounds it on 32-bit machines too
		return nil, fmt.Errorf("object of %d bytes is too large", size)
	}
	var out []byte
	for seq := uint64(1); uint64(len(out)) < size; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return nil, fmt.Errorf("chunk after sequence %d: %w", seq, err)
		}
		if out == nil && uint64(len(m.Data)) == size {
			return m.Data, nil // one chunk: no copy
		}
		if out == nil {
			out = make([]byte, 0, min(size, reserved))
		}
		if uint64(len(out)+len(m.Data)) > size {
			return nil, fmt.Errorf("chunks hold more than the %d bytes of the object", size)
		}
		out = append(out, m.Data...)
		seq = m.Sequence + 1
	}
	return out, nil
}

func (b *Bus) objStream(ctx context.Context, bucket string) (jetstream.Stream, error) {
	st, err := b.stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("natsbus: object store %s: %w", bucket, err)
	}
	return st, nil
}

// stream returns the stream named name (cached).
func (b *Bus) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st, ok := b.streams[name]; ok {
		return st, nil
	}
	st, err := b.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	b.streams[name] = st
	return st, nil
}

const roundKey = "state"

// versionKey is the KV key of a model version's hash.
func versionKey(version string) string { return "version." + version }

// put writes key in the KV bucket named bucket.
func (b *Bus) put(ctx context.Context, bucket, key string, value []byte) error {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	k, err := b.kv(ctx, bucket)
	if err != nil {
		return err
	}
	if _, err := k.Put(ctx, key, value); err != nil {
		return fmt.Errorf("natsbus: put %s in %s: %w", key, bucket, err)
	}
	return nil
}

// get reads key from the KV bucket named bucket (ErrNotFound if it has none).
func (b *Bus) get(ctx context.Context, bucket, key string) ([]byte, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	k, err := b.kv(ctx, bucket)
	if err != nil {
		return nil, err
	}
	e, err := k.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("natsbus: %s in %s: %w", key, bucket, federation.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("natsbus: get %s in %s: %w", key, bucket, err)
	}
	return e.Value(), nil
}

// PutRound implements federation.Transport.
func (b *Bus) PutRound(ctx context.Context, fed string, state []byte) error {
	return b.put(ctx, roundBucket(fed), roundKey, state)
}

// GetRound implements federation.Transport.
func (b *Bus) GetRound(ctx context.Context, fed string) ([]byte, error) {
	return b.get(ctx, roundBucket(fed), roundKey)
}

// PutVersion implements federation.Transport.
func (b *Bus) PutVersion(ctx context.Context, fed, version, hash string) error {
	return b.put(ctx, roundBucket(fed), versionKey(version), []byte(hash))
}

// GetVersion implements federation.Transport.
func (b *Bus) GetVersion(ctx context.Context, fed, version string) (string, error) {
	v, err := b.get(ctx, roundBucket(fed), versionKey(version))
	return string(v), err
}

// kvOperation is the header that marks a KV message that is not a put (a delete or a
// purge of the key).
const kvOperation = "KV-Operation"

// roundPoll is how often WatchRound looks for a newer round state without being told of
// one: after a reconnect, or a notice lost.
const roundPoll = 5 * time.Second

// roundStateSubject is the subject of fed's round state in its bucket; roundNotice is
// where the bucket republishes each state it has stored, with its sequence and the
// sequence of the state before it (a watcher that read that one needs no other read). The
// notice is not under $KV, which a leaf node with JetStream of its own does not pass on.
func roundStateSubject(fed string) string { return "$KV." + roundBucket(fed) + "." + roundKey }
func roundNotice(fed string) string       { return "mw.round." + fed }

// WatchRound implements federation.Transport without a consumer (a factory may not create
// one, FactoryPermissions). The bucket republishes each state it stores (roundNotice): a
// notice whose previous state is the last one read is handed on as it is; after a gap (a
// notice lost to a reconnect, or dropped because fn was slow) the states are read in order
// with direct gets, each after the last one read, up to the one announced. At the start,
// and every roundPoll, it reads that way until there is no newer state.
// The bucket is looked up within the configured timeout, whatever ctx's deadline.
func (b *Bus) WatchRound(ctx context.Context, fed string, fn func(state []byte)) error {
	bucket := roundBucket(fed)
	lctx, cancel := b.bounded(ctx)
	defer cancel()
	if _, err := b.kv(lctx, bucket); err != nil { // an unknown or forbidden federation, named as such
		return err
	}
	st, err := b.stream(lctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("natsbus: watch round state of %s: %w", fed, err)
	}
	subject := roundStateSubject(fed)
	notices := make(chan *nats.Msg, 16)
	var dropped atomic.Bool
	sub, err := b.nc.Subscribe(roundNotice(fed), func(m *nats.Msg) {
		select {
		case notices <- m:
		default:
			dropped.Store(true) // the next read catches up
		}
	})
	if err != nil {
		return fmt.Errorf("natsbus: watch round state of %s: %w", fed, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	started := false     // the current state was looked up
	var last uint64      // the sequence of the last state read
	var announced uint64 // the highest sequence a notice announced
	deliver := func(seq uint64, h nats.Header, data []byte) {
		started, last = true, seq
		if h.Get(kvOperation) == "" { // not a deletion of the key
			fn(data)
		}
	}
	// read hands fn the states after last: up to the one announced, or with all, until
	// there is no newer one.
	read := func(all bool) {
		for ctx.Err() == nil && (all || !started || last < announced) {
			rctx, cancel := b.bounded(ctx)
			var m *jetstream.RawStreamMsg
			var err error
			if started {
				m, err = st.GetMsg(rctx, last+1, jetstream.WithGetMsgSubject(subject))
			} else {
				m, err = st.GetLastMsgForSubject(rctx, subject)
			}
			cancel()
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				started = true // none yet: every state from now on is new
				return
			}
			if err != nil {
				if ctx.Err() == nil {
					b.log.Debug("round state not read; trying again", "federation", fed, "err", err)
				}
				return
			}
			deliver(m.Sequence, m.Header, m.Data)
		}
	}
	tick := time.NewTicker(roundPoll)
	defer tick.Stop()
	for all := true; ; {
		if dropped.Swap(false) {
			all = true
		}
		read(all)
		select {
		case <-ctx.Done():
			return nil
		case m := <-notices:
			seq, err1 := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			prev, err2 := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
			switch {
			case err1 != nil || err2 != nil:
				all = true // not a notice this bucket sends: look
			case seq <= last && started:
				all = false // read already
			case started && prev == last:
				deliver(seq, m.Header, m.Data)
				all = false
			default:
				announced, all = max(announced, seq), false
			}
		case <-tick.C:
			all = true
		}
	}
}

// Federations returns the names of the federations with any storage on the server (any
// of the streams DeleteFederation deletes: one left by a deletion that stopped partway
// counts), sorted. Streams whose name is not a federation's are left out.
func (b *Bus) Federations(ctx context.Context) ([]string, error) {
	ctx, cancel := b.bounded(ctx)
	defer cancel()
	prefixes := federationStreams("")
	seen := map[string]bool{}
	names := b.js.StreamNames(ctx)
	for name := range names.Name() {
		for _, prefix := range prefixes {
			if fed, ok := strings.CutPrefix(name, prefix); ok && federation.CheckName(fed) == nil {
				seen[fed] = true
			}
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("natsbus: list federations: %w", err)
	}
	feds := make([]string, 0, len(seen))
	for fed := range seen {
		feds = append(feds, fed)
	}
	sort.Strings(feds)
	return feds, nil
}

// federationStreams names the streams that hold fed's storage.
func federationStreams(fed string) []string {
	return []string{updateStream(fed), "OBJ_" + modelBucket(fed), "OBJ_" + hubBucket(fed), "KV_" + receiptBucket(fed), "KV_" + roundBucket(fed)}
}

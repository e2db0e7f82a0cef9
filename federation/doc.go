// Package federation lets gateways of different factories train one shared model while
// raw data never leaves a factory.
//
// # Threat model
//
// Parties: gateways (one per factory, each with its own ed25519 identity key), the hub
// (run by an OEM or a consortium) and the network between them (NATS).
//
// Trusted: each gateway trusts its own data, its own key and the code it runs. The hub is
// trusted to run the round protocol (select participants, relay messages, publish the
// aggregate) but not with any single gateway's update: it is modelled as honest but
// curious, and the parts that protect gateways from it are named below.
//
// Verified: every message of the round protocol is signed by its sender's identity key and
// bound to the round and a nonce (forgeries, replays and cross-round messages are
// rejected); every decoder of bytes from the network is strict (length, range and
// finiteness checks, fuzzed). The hub does not trust gateways either: it clips and can
// reject outlying updates, and the robust strategies of package aggregate bound what a
// minority of Byzantine gateways (up to the configured f) can do to the global model.
//
// What protects what:
//   - package secagg (secure aggregation): the hub learns only the sum of the updates of
//     at least t gateways, not any single update, as long as fewer than t gateways collude
//     with it. It does not hide the sum, who took part, or who dropped out.
//   - package dp (client-level differential privacy): clipping plus Gaussian noise bound
//     what the published model, and the sum the hub sees, reveal about any one factory
//     taking part or not, to (ε, δ) accounted over all rounds and enforced as a budget.
//   - package aggregate: robustness, not privacy. Robust rules need each update in the
//     clear, so they cannot be combined with secure aggregation; with secagg the hub
//     relies on client-side clipping (bounded influence) and DP instead.
//   - package compress: bandwidth only; it protects nothing.
//
// What leaks, always: the set of participants of each round, timing and message sizes,
// the aggregate (the new global model), the sample counts gateways report, and, without
// secure aggregation, every update to the hub. Without DP, the global model can leak
// information about rare events in one factory's data (membership inference).
package federation

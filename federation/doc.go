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
// curious, except that secure aggregation also holds against a hub that lies (below),
// and the parts that protect gateways from it are named below.
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
//     with it. This part holds even against a hub that deviates from the protocol (it
//     drops, reorders or rewrites what it relays, or shows gateways different survivor
//     sets) when the gateways know each other's identity keys (ParticipantConfig.Peers)
//     and 2t > N + c for c colluding gateways (c < N/3 with the default threshold): every
//     gateway signs its mask keys, and before revealing any share each survivor signs
//     the survivor set it was shown and checks the signatures of at least t others over
//     the same set (the consistency check). Without configured peers, gateways take the
//     keys the hub relays: a split survivor set is still detected, but a hub that also
//     invents members is not. A lying hub can still abort rounds (counted:
//     millwright_federation_secagg_failures_total), choose who is counted as dropped, and
//     learn the sum over the survivors it declares. It does not hide the sum, who took
//     part, or who dropped out.
//   - package dp (client-level differential privacy): clipping plus Gaussian noise bound
//     what the published model, and the sum the hub sees, reveal about any one factory
//     taking part or not, to (ε, δ) accounted over all rounds and enforced as a budget.
//   - package aggregate: robustness, not privacy. Robust rules need each update in the
//     clear, so they cannot be combined with secure aggregation; with secagg the hub
//     relies on client-side clipping (bounded influence) and DP instead.
//   - package compress: bandwidth only; it protects nothing.
//
// Restarts: a hub restarted in the middle of a round finishes it. The round state (KV)
// records every phase the hub closed, written in the same put that announces it; the
// update stream holds every message the hub accepted. A restarted hub replays the stream:
// a closed phase counts only the gateways its record names and must rebuild exactly what
// was published (else the round is abandoned, never re-decided), so a restart cannot
// widen a survivor set the gateways have already acted on. Gateways keep their round
// state in memory and resend nothing. A round's release is committed (a hub-only blob
// naming the stored model, its ledger record and the server optimizer's state) before it
// is recorded and versioned: a hub restarted after the commit completes that release, so
// it never publishes a second model for a round, spends privacy twice or steps FedAdam
// twice. The commit names the round's ledger record id (ledger.NameID), so a hub stopped
// between the record and the version asks its outbox instead of recording again.
//
// Transport: the hub alone writes the round state, models, versions and receipts (they are
// trusted for that, not signed, except the models): package natsbus keeps every factory in
// a NATS account of its own that imports from the hub's only the reads it may make and the
// publish of its own updates, because subject permissions alone do not check reply
// subjects, and JetStream stored the answer to a permitted request wherever its reply
// subject pointed.
//
// Receipts: after each round the hub tells each target, and each member it rejected a
// message from, what became of its part (used, rejected and why, missing, abandoned and
// why). A member can read only its own receipt (transport permissions); receipts tell
// members nothing about each other.
//
// What leaks, always: the set of participants of each round, timing and message sizes,
// the aggregate (the new global model), and, without secure aggregation, every update,
// its sample count and its local metrics (Update.Metrics) to the hub. The metrics carry no
// noise: the hub records their round mean (RoundReport.Metrics) in the round's ledger
// record only when the round has no DP. With secure aggregation a gateway reports no
// sample count; with secagg.sample_cap the hub learns the sum of the survivors' capped
// counts, and with secagg.metrics the weighted sums of those metrics (with DP, in the
// final evaluation round only). A final evaluation round
// (FederationConfig.FinalEvaluation) sends each gateway's metrics about the last model and
// its window count, in the clear without secure aggregation (masked with it, as above).
// With DP the hub records only their mean, each value clipped and the sums noised as a
// round's are, for a round's privacy cost: in the clear (dp.Noise.Mean), or under secure
// aggregation, where the gateways clip their values before masking them and the noise is
// the hub's on the unmasked sums (central) or the gateways' shares (distributed).
// Without DP, the global model can leak information about rare events in one factory's
// data (membership inference).
package federation

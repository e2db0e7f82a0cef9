#!/usr/bin/env node
// A node-opcua server with simulated machines: the real, third-party OPC-UA peer of
// Millwright's integration tests and benchmarks (deploy/services.sh starts one; tests start
// private ones they can kill and restart).
//
// Address space (namespace 1, string node ids):
//
//   Objects/Plant/<line>/<machine>/<signal>   ns=1;s=Plant/<line>/<machine>/<signal>
//     temperature Double, vibration Float, counter Int32, speed UInt16, running Boolean,
//     state String, spectrum Double[8]
//   Objects/Plant/Diagnostics/{uncertain,bad}  a Double with an Uncertain / Bad status code
//   Objects/Load/g<NNN>/i<NNNNN>              ns=1;s=Load/i<NNNNN>, --items Double variables
//                                             (1,000 per folder) for benchmarks
//
// The plant's values are a function of the tick number (one tick per --interval), so runs
// are repeatable and every tick changes every value; the source timestamp is the tick's
// time. The load items are sampled on read (the read time in ms + i/1e6), so every sample
// the server takes is a change, whatever the sampling interval.
//
// Security: None, Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss in Sign
// and SignAndEncrypt. Anonymous login is allowed; a user name and password are checked
// against --user and the password file (or OPCUA_PASSWORD). Client certificates are trusted
// automatically unless --strict-trust is given (then put them in <pki>/trusted/certs).
//
// It prints "ready <endpoint url>" on stdout once it listens, and shuts down on TERM/INT.
"use strict";

const fs = require("fs");
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    Variant,
    DataValue,
    DataType,
    VariantArrayType,
    StatusCodes,
    SecurityPolicy,
    MessageSecurityMode,
    Subscription,
    nodesets,
} = require("node-opcua");

function usage(msg) {
    if (msg) {
        process.stderr.write(`server.js: ${msg}\n`);
    }
    process.stderr.write(`usage: node server.js [options]   (each option also reads an env var)
  --host ADDR            listen address (OPCUA_HOST, default 127.0.0.1)
  --port N               TCP port (OPCUA_PORT, default 4840)
  --pki DIR              PKI directory: own certificate, trusted/ and rejected/ (OPCUA_PKI, default ./pki)
  --user NAME            the one user name accepted with a password (OPCUA_USER, default millwright)
  --password-file FILE   file holding that user's password (OPCUA_PASSWORD_FILE; or OPCUA_PASSWORD)
  --machines N           simulated machines (OPCUA_MACHINES, default 6)
  --items N              extra Double variables under Objects/Load, for benchmarks (OPCUA_ITEMS, default 0)
  --interval MS          update period of every value in milliseconds (OPCUA_INTERVAL_MS, default 100)
  --max-notifications N  per-publish notification limit (OPCUA_MAX_NOTIFICATIONS, default max(1000, items+machines*7+2))
  --strict-trust         do not trust unknown client certificates automatically (OPCUA_STRICT_TRUST=1)
`);
    process.exit(2);
}

function parseArgs(argv) {
    const env = process.env;
    const o = {
        host: env.OPCUA_HOST || "127.0.0.1",
        port: env.OPCUA_PORT || "4840",
        pki: env.OPCUA_PKI || path.join(process.cwd(), "pki"),
        user: env.OPCUA_USER || "millwright",
        passwordFile: env.OPCUA_PASSWORD_FILE || "",
        machines: env.OPCUA_MACHINES || "6",
        items: env.OPCUA_ITEMS || "0",
        interval: env.OPCUA_INTERVAL_MS || "100",
        maxNotifications: env.OPCUA_MAX_NOTIFICATIONS || "",
        strictTrust: env.OPCUA_STRICT_TRUST === "1",
    };
    const flags = {
        "--host": "host", "--port": "port", "--pki": "pki", "--user": "user",
        "--password-file": "passwordFile", "--machines": "machines", "--items": "items",
        "--interval": "interval", "--max-notifications": "maxNotifications",
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "--strict-trust") {
            o.strictTrust = true;
        } else if (a === "-h" || a === "--help") {
            usage();
        } else if (flags[a]) {
            if (i + 1 >= argv.length) usage(`${a} needs a value`);
            o[flags[a]] = argv[++i];
        } else {
            usage(`unknown argument ${a}`);
        }
    }
    const int = (name, v, lo, hi) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < lo || n > hi) usage(`${name} ${JSON.stringify(v)} is not an integer in [${lo}, ${hi}]`);
        return n;
    };
    o.port = int("--port", o.port, 1, 65535);
    o.machines = int("--machines", o.machines, 1, 1000);
    o.items = int("--items", o.items, 0, 200000);
    o.interval = int("--interval", o.interval, 10, 3600000);
    const total = o.items + o.machines * 7 + 2;
    o.maxNotifications = o.maxNotifications === "" ? Math.max(1000, total) : int("--max-notifications", o.maxNotifications, 1, 10000000);
    o.password = env.OPCUA_PASSWORD || "";
    if (o.passwordFile) {
        try {
            o.password = fs.readFileSync(o.passwordFile, "utf8").trim();
        } catch (err) {
            usage(`cannot read the password file: ${err.message}`);
        }
    }
    if (!o.password) usage("no password: give --password-file or OPCUA_PASSWORD");
    return o;
}

const SIGNALS = ["temperature", "vibration", "counter", "speed", "running", "state", "spectrum"];
const SPECTRUM_BINS = 8;

// machineValues returns the value of each signal of machine m (0-based) at tick k.
function machineValues(m, k, intervalMs) {
    const t = (k * intervalMs) / 1000; // seconds since start
    const phase = m * 0.7;
    const running = Math.floor(t / 30 + m) % 10 !== 0; // idle one period in ten
    const load = running ? 0.65 + 0.2 * Math.sin((2 * Math.PI * t) / 300 + phase) : 0;
    const spectrum = new Float64Array(SPECTRUM_BINS);
    for (let b = 0; b < SPECTRUM_BINS; b++) {
        spectrum[b] = (1 + load) / (b + 1) + 0.01 * ((k + b + m) % 7);
    }
    return [
        new Variant({ dataType: DataType.Double, value: 40 + 20 * load + 0.1 * ((k + m) % 11) }),
        new Variant({ dataType: DataType.Float, value: 1.2 + load + 0.05 * ((k * 3 + m) % 5) }),
        new Variant({ dataType: DataType.Int32, value: (k + m * 1000) | 0 }),
        new Variant({ dataType: DataType.UInt16, value: Math.round(1480 * (running ? 1 - 0.03 * load : 0)) + (k % 3) }),
        new Variant({ dataType: DataType.Boolean, value: running }),
        new Variant({ dataType: DataType.String, value: running ? "running" : "idle" }),
        new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array, value: spectrum }),
    ];
}

function initialVariant(signal) {
    switch (signal) {
        case "temperature": return { dataType: DataType.Double, value: 0 };
        case "vibration": return { dataType: DataType.Float, value: 0 };
        case "counter": return { dataType: DataType.Int32, value: 0 };
        case "speed": return { dataType: DataType.UInt16, value: 0 };
        case "running": return { dataType: DataType.Boolean, value: false };
        case "state": return { dataType: DataType.String, value: "" };
        case "spectrum": return { dataType: DataType.Double, arrayType: VariantArrayType.Array, value: new Float64Array(SPECTRUM_BINS) };
    }
    throw new Error(`unknown signal ${signal}`);
}

function pad(n, width) {
    return String(n).padStart(width, "0");
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    // Raise the per-publish cap before any subscription exists: by default node-opcua sends at
    // most 1,000 notifications per PublishResponse, which caps 10k items at 100 ms.
    Subscription.maxNotificationPerPublishHighLimit = o.maxNotifications;

    fs.mkdirSync(o.pki, { recursive: true });
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: o.pki,
        automaticallyAcceptUnknownCertificate: !o.strictTrust,
    });
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(o.pki, "user"),
        automaticallyAcceptUnknownCertificate: !o.strictTrust,
    });

    const totalItems = o.items + o.machines * SIGNALS.length + 2;
    const server = new OPCUAServer({
        host: o.host,
        port: o.port,
        hostname: "localhost",
        resourcePath: "",
        nodesets: [nodesets.standard],
        serverCertificateManager,
        userCertificateManager,
        securityPolicies: [
            SecurityPolicy.None,
            SecurityPolicy.Basic256Sha256,
            SecurityPolicy.Aes128_Sha256_RsaOaep,
            SecurityPolicy.Aes256_Sha256_RsaPss,
        ],
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: true,
        userManager: {
            isValidUser: (user, password) => user === o.user && password === o.password,
        },
        isAuditing: false,
        disableDiscovery: true,
        maxConnectionsPerEndpoint: 100,
        serverCapabilities: {
            maxSessions: 100,
            maxSubscriptions: 200,
            maxSubscriptionsPerSession: 20,
            maxMonitoredItems: Math.max(10000, 2 * totalItems),
            maxMonitoredItemsPerSubscription: Math.max(10000, 2 * totalItems),
            maxMonitoredItemsQueueSize: 1000,
            operationLimits: {
                maxNodesPerRead: Math.max(1000, totalItems),
                maxNodesPerBrowse: Math.max(1000, totalItems),
                maxMonitoredItemsPerCall: Math.max(1000, totalItems),
                maxNodesPerTranslateBrowsePathsToNodeIds: Math.max(1000, totalItems),
            },
        },
        buildInfo: { productName: "Millwright node-opcua test server", manufacturerName: "Millwright" },
        serverInfo: { applicationUri: "urn:millwright:opcua-test-server", productUri: "urn:millwright:opcua-test-server" },
    });

    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const plant = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=Plant", browseName: "Plant" });

    // Machines m01..mNN on lines of up to four machines each.
    const machineVars = [];
    const lines = new Map();
    for (let m = 0; m < o.machines; m++) {
        const lineName = `line${Math.floor(m / 4) + 1}`;
        if (!lines.has(lineName)) {
            lines.set(lineName, ns.addFolder(plant, { nodeId: `s=Plant/${lineName}`, browseName: lineName }));
        }
        const machine = `m${pad(m + 1, 2)}`;
        const prefix = `Plant/${lineName}/${machine}`;
        const folder = ns.addFolder(lines.get(lineName), { nodeId: `s=${prefix}`, browseName: machine });
        machineVars.push(
            SIGNALS.map((signal) =>
                ns.addVariable({
                    componentOf: folder,
                    nodeId: `s=${prefix}/${signal}`,
                    browseName: signal,
                    dataType: initialVariant(signal).dataType,
                    valueRank: signal === "spectrum" ? 1 : -1,
                    arrayDimensions: signal === "spectrum" ? [SPECTRUM_BINS] : null,
                    minimumSamplingInterval: 10,
                    value: new Variant(initialVariant(signal)),
                }),
            ),
        );
    }

    // Two values with a non-good quality, to test the status code mapping.
    const diag = ns.addFolder(plant, { nodeId: "s=Plant/Diagnostics", browseName: "Diagnostics" });
    const uncertain = ns.addVariable({
        componentOf: diag, nodeId: "s=Plant/Diagnostics/uncertain", browseName: "uncertain",
        dataType: "Double", minimumSamplingInterval: 10, value: new Variant({ dataType: DataType.Double, value: 0 }),
    });
    const bad = ns.addVariable({
        componentOf: diag, nodeId: "s=Plant/Diagnostics/bad", browseName: "bad",
        dataType: "Double", minimumSamplingInterval: 10, value: new Variant({ dataType: DataType.Double, value: 0 }),
    });

    // Load items for benchmarks, 1,000 per folder.
    let loadCount = 0;
    if (o.items > 0) {
        const load = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=Load", browseName: "Load" });
        let group = null;
        for (let i = 0; i < o.items; i++) {
            if (i % 1000 === 0) {
                const g = `g${pad(i / 1000, 3)}`;
                group = ns.addFolder(load, { nodeId: `s=Load/${g}`, browseName: g });
            }
            const name = `i${pad(i, 5)}`;
            // Sampled on read, like a PLC tag: the value is the read time in milliseconds
            // plus i/1e6, so every sample differs from the previous one and no update loop
            // has to touch 50,000 variables.
            const offset = i / 1e6;
            ns.addVariable({
                componentOf: group, nodeId: `s=Load/${name}`, browseName: name,
                dataType: "Double", minimumSamplingInterval: 10,
                value: {
                    timestamped_get: () => {
                        const now = new Date();
                        return new DataValue({
                            value: new Variant({ dataType: DataType.Double, value: now.getTime() + offset }),
                            statusCode: StatusCodes.Good, sourceTimestamp: now, serverTimestamp: now,
                        });
                    },
                },
            });
            loadCount++;
        }
    }

    // One timer updates every value; tick k's source timestamp is start + k*interval.
    const start = Date.now();
    let tick = 0;
    const update = () => {
        const ts = new Date(start + tick * o.interval);
        for (let m = 0; m < machineVars.length; m++) {
            const values = machineValues(m, tick, o.interval);
            for (let s = 0; s < values.length; s++) {
                machineVars[m][s].setValueFromSource(values[s], StatusCodes.Good, ts);
            }
        }
        uncertain.setValueFromSource(new Variant({ dataType: DataType.Double, value: tick }), StatusCodes.UncertainLastUsableValue, ts);
        bad.setValueFromSource(new Variant({ dataType: DataType.Double, value: tick }), StatusCodes.BadSensorFailure, ts);
        tick++;
    };
    update();
    // Re-arm from the ideal schedule so a slow tick does not shift the ones after it.
    let timer = null;
    const schedule = () => {
        const next = start + tick * o.interval;
        timer = setTimeout(() => {
            update();
            schedule();
        }, Math.max(0, next - Date.now()));
    };
    schedule();

    await server.start();
    const url = `opc.tcp://${o.host}:${o.port}`;
    process.stdout.write(`ready ${url} machines=${o.machines} items=${o.items} interval_ms=${o.interval} max_notifications=${o.maxNotifications} pki=${o.pki}\n`);

    let stopping = false;
    const stop = async (sig) => {
        if (stopping) return;
        stopping = true;
        clearTimeout(timer);
        process.stdout.write(`stopping on ${sig}\n`);
        const force = setTimeout(() => process.exit(0), 3000);
        force.unref();
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((err) => {
    process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});

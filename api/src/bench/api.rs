//! `refledger bench api`: requests per second and latency of the real server (durable
//! file store, fsync per acknowledged write) for `credits/spend` and `payments` under
//! concurrent connections, side by side with a trivial axum endpoint served the same way
//! on the same machine: the ceiling of the HTTP stack, so the ratio shows what the
//! ledger itself costs.
//!
//! The client is a minimal HTTP/1.1 keep-alive client over one TCP connection per
//! worker: it costs the shared CPU far less than a full client, so more of the machine
//! goes to the server being measured. Every response's status is checked; a request
//! that fails is counted, not timed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use api::cli::ServeArgs;
use api::tokens::{Role, TokenSpec};

type BenchResult<T> = Result<T, String>;

const BILLING_SECRET: &str = "bench-billing-secret-0123456789";
/// Credits granted to each spending account: enough for any run.
const GRANT_CREDITS: u64 = 1_000_000_000;
/// Largest response body the client reads.
const RESPONSE_SIZE_MAX: usize = 1 << 20;

pub struct ApiBenchOptions {
    pub connections: usize,
    pub seconds: u64,
    pub dir: PathBuf,
}

pub struct Workload {
    pub name: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
}

impl Workload {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

pub struct ApiBenchReport {
    pub connections: usize,
    pub seconds: u64,
    pub workloads: Vec<Workload>,
    pub machine: String,
}

/// One keep-alive connection.
struct Connection {
    stream: BufReader<TcpStream>,
    address: std::net::SocketAddr,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(address: std::net::SocketAddr) -> BenchResult<Connection> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect {address}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| error.to_string())?;
        Ok(Connection {
            stream: BufReader::new(stream),
            address,
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one POST and returns the status; the body is in `self.body`.
    async fn post(&mut self, path: &str, body: &[u8]) -> BenchResult<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {BILLING_SECRET}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let io = |error: std::io::Error| error.to_string();
        self.stream
            .get_mut()
            .write_all(&request)
            .await
            .map_err(io)?;
        self.line.clear();
        self.stream.read_line(&mut self.line).await.map_err(io)?;
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {:?}", self.line))?;
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await.map_err(io)?;
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| "bad content-length")?;
                }
            }
        }
        if length > RESPONSE_SIZE_MAX {
            return Err(format!("response of {length} bytes"));
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await.map_err(io)?;
        Ok(status)
    }
}

/// A request a worker sends: path and body, for worker `worker`'s `n`th request.
type MakeRequest = dyn Fn(usize, u64) -> (String, Vec<u8>) + Send + Sync;

async fn measure(
    name: &'static str,
    address: std::net::SocketAddr,
    connections: usize,
    duration: Duration,
    make: std::sync::Arc<MakeRequest>,
) -> BenchResult<Workload> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let make = make.clone();
        workers.spawn(async move {
            let mut connection = Connection::open(address).await?;
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (path, body) = make(worker, n);
                n += 1;
                let sent = Instant::now();
                let status = connection.post(&path, &body).await?;
                let took = sent.elapsed();
                if (200..300).contains(&status) {
                    latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors += 1;
                    if errors == 1 {
                        eprintln!(
                            "{name}: status {status}: {}",
                            String::from_utf8_lossy(&connection.body)
                        );
                    }
                }
            }
            Ok::<_, String>((latencies, errors))
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (mine, failed) = joined.map_err(|error| error.to_string())??;
        latencies.extend(mine);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |quantile: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let index = ((latencies.len() as f64 * quantile).ceil() as usize).clamp(1, latencies.len());
        u64::from(latencies[index - 1])
    };
    Ok(Workload {
        name,
        requests: latencies.len() as u64,
        errors,
        elapsed,
        latency_us_p50: at(0.50),
        latency_us_p99: at(0.99),
    })
}

/// The ceiling: an axum endpoint that parses a JSON body and answers a small JSON body.
async fn trivial_server() -> BenchResult<(std::net::SocketAddr, oneshot::Sender<()>)> {
    async fn noop(Json(body): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "balance": body.as_object().map_or(0, |o| o.len()) }))
    }
    let app = Router::new().route("/noop", post(noop));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| error.to_string())?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((address, stop))
}

/// A random-looking (version 4) account id, the same for the same kind and worker:
/// referral codes derive from the id's bits, so ids must differ all over.
fn account_id(kind: u8, worker: usize) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("bench-{kind}-{worker}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

pub async fn run(options: ApiBenchOptions) -> BenchResult<ApiBenchReport> {
    std::fs::create_dir_all(&options.dir).map_err(|error| error.to_string())?;
    let data = tempfile::tempdir_in(&options.dir).map_err(|error| error.to_string())?;
    let args = ServeArgs {
        data: data.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        token: vec![TokenSpec::new(Role::Billing, BILLING_SECRET).map_err(|e| e.to_string())?],
        tokens_file: None,
        demo: false,
        master_key_file: None,
        currency: "EUR".to_owned(),
        store: None,
        key_vault: None,
        key_vault_kek_file: None,
        key_vault_ca_file: None,
        fingerprint_key_file: None,
    };
    let (state, opened) = api::server::prepare(&args)
        .await
        .map_err(|error| error.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| error.to_string())?;
    let ledger_address = listener.local_addr().map_err(|error| error.to_string())?;
    let (stop_ledger, ledger_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(api::server::run(
        state,
        listener,
        api::server::Edges::default(),
        async move {
            let _ = ledger_stopped.await;
        },
    ));
    let (trivial_address, stop_trivial) = trivial_server().await?;

    // Set-up: one spender and one referred payer per connection.
    eprintln!("setting up {} accounts", 3 * options.connections);
    let mut setup = Connection::open(ledger_address).await?;
    for worker in 0..options.connections {
        let spender = account_id(1, worker);
        let referrer = account_id(2, worker);
        let payer = account_id(3, worker);
        let expect = |status: u16, what: &str| {
            if status == 201 {
                Ok(())
            } else {
                Err(format!("set-up {what}: status {status}"))
            }
        };
        let open = |id: &str, code: Option<&str>| {
            let mut body = serde_json::json!({
                "account_id": id, "name": "Bench Person",
                "email": format!("{id}@bench.example"),
                // Before the payments' date: a payment never precedes its payer.
                "opened_at": "2026-01-01T00:00:00Z",
            });
            if let Some(code) = code {
                body["referral_code"] = code.into();
            }
            body.to_string().into_bytes()
        };
        let status = setup.post("/v1/accounts", &open(&spender, None)).await?;
        expect(status, "spender")?;
        let grant = serde_json::json!({
            "grant_id": "bench-grant", "credits": GRANT_CREDITS, "reason": "promotion",
        });
        let status = setup
            .post(
                &format!("/v1/accounts/{spender}/credits/grants"),
                grant.to_string().as_bytes(),
            )
            .await?;
        expect(status, "grant")?;
        let status = setup.post("/v1/accounts", &open(&referrer, None)).await?;
        expect(status, "referrer")?;
        let opened_referrer: serde_json::Value =
            serde_json::from_slice(&setup.body).map_err(|error| error.to_string())?;
        let code = opened_referrer["referral_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = setup
            .post("/v1/accounts", &open(&payer, Some(&code)))
            .await?;
        expect(status, "payer")?;
    }
    drop(setup);

    let duration = Duration::from_secs(options.seconds);
    let connections = options.connections;
    let mut workloads = Vec::new();
    // Interleaved twice, so a burst of load from elsewhere on the shared machine does not
    // fall on one workload only; the rounds are summed.
    let rounds = 2;
    let mut totals: Vec<Vec<Workload>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        let noop: std::sync::Arc<MakeRequest> = std::sync::Arc::new(|worker, n| {
            let body = serde_json::json!({"spend_id": format!("s-{worker}-{n}"), "credits": 1, "persona": "chef"});
            ("/noop".to_owned(), body.to_string().into_bytes())
        });
        totals[0].push(
            measure(
                "trivial axum endpoint (ceiling)",
                trivial_address,
                connections,
                duration,
                noop,
            )
            .await?,
        );
        let spend: std::sync::Arc<MakeRequest> = std::sync::Arc::new(move |worker, n| {
            let body = serde_json::json!({"spend_id": format!("s-{round}-{worker}-{n}"), "credits": 1, "persona": "chef"});
            (
                format!("/v1/accounts/{}/credits/spend", account_id(1, worker)),
                body.to_string().into_bytes(),
            )
        });
        totals[1].push(
            measure(
                "POST credits/spend (durable)",
                ledger_address,
                connections,
                duration,
                spend,
            )
            .await?,
        );
        let pay: std::sync::Arc<MakeRequest> = std::sync::Arc::new(move |worker, n| {
            let body = serde_json::json!({
                "payment_id": format!("pi_bench_{round}_{worker}_{n}"),
                // A subscription payment: a credit pack would add a grant per request and
                // soon meet the ledger's limit on active grants per account.
                "account_id": account_id(3, worker), "kind": "subscription",
                "amount": "19.99", "currency": "EUR", "paid_at": "2026-10-03T10:00:00Z",
            });
            ("/v1/payments".to_owned(), body.to_string().into_bytes())
        });
        totals[2].push(
            measure(
                "POST payments (durable, 1 commission)",
                ledger_address,
                connections,
                duration,
                pay,
            )
            .await?,
        );
    }
    for rounds in totals {
        workloads.push(combine(rounds));
    }

    let _ = stop_trivial.send(());
    let _ = stop_ledger.send(());
    server
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    opened.close().await.map_err(|error| error.to_string())?;
    Ok(ApiBenchReport {
        connections,
        seconds: options.seconds,
        workloads,
        machine: machine(),
    })
}

/// Sums the rounds of one workload; latencies are the rounds' medians of quantiles
/// (each round has the same length, so they weigh alike).
fn combine(rounds: Vec<Workload>) -> Workload {
    let median = |mut values: Vec<u64>| {
        values.sort_unstable();
        values[values.len() / 2]
    };
    Workload {
        name: rounds[0].name,
        requests: rounds.iter().map(|round| round.requests).sum(),
        errors: rounds.iter().map(|round| round.errors).sum(),
        elapsed: rounds.iter().map(|round| round.elapsed).sum(),
        latency_us_p50: median(rounds.iter().map(|round| round.latency_us_p50).collect()),
        latency_us_p99: rounds
            .iter()
            .map(|round| round.latency_us_p99)
            .max()
            .unwrap_or(0),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpu}, {cores} cores available, load average {load} at the end")
}

pub fn render_markdown(report: &ApiBenchReport) -> String {
    let ceiling = report.workloads[0].per_second();
    let mut text = format!(
        "{} connections, {} s per workload per round, 2 interleaved rounds; {}\n\n\
         | workload | requests/s | p50 ms | p99 ms | errors | of ceiling |\n\
         |---|---:|---:|---:|---:|---:|\n",
        report.connections, report.seconds, report.machine
    );
    for workload in &report.workloads {
        text.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {:.0}% |\n",
            workload.name,
            workload.per_second(),
            workload.latency_us_p50 as f64 / 1000.0,
            workload.latency_us_p99 as f64 / 1000.0,
            workload.errors,
            100.0 * workload.per_second() / ceiling,
        ));
    }
    text
}

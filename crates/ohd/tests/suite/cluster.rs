//! Several ohd processes over one real PostgreSQL (issue 15): clients of one conversation on
//! different nodes see identical streams; the owner's death, or its loss of the database, hands
//! the conversation to another node within seconds, with nothing lost or duplicated; a node
//! restarted under load catches up.
//!
//! The database server is `OHD_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! each test makes a database of its own (`ohd_store::testing`). Without a server the tests are
//! skipped, except under CI, where they fail.

use crate::common::*;
use ohd_protocol::ConversationId;
use ohd_scripted_llm::{Script, ScriptedLlmHandle, Turn};
use ohd_store::LeaseStore;
use ohd_store::postgres::PgStore;
use ohd_store::testing::TestDatabase;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Short, so that the tests of a lapse are quick; the nodes renew every third of it.
const LEASE_TTL_MS: u64 = 2000;
/// For the tests that are not about a lapse: long, so that a busy machine's late heartbeat
/// never hands a conversation over in the middle of them.
const STEADY_TTL_MS: u64 = 10_000;

/// A TCP forwarder between a node and PostgreSQL that the test can cut, as a network partition
/// would: open connections are dropped, new ones are accepted and left hanging until restored.
struct Partition {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped at each cut, so that connections made before it end.
    epoch: tokio::sync::watch::Sender<u64>,
}

impl Partition {
    async fn start(to: std::net::SocketAddr) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let (cut_flag, epochs) = (cut.clone(), epoch.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (cut, mut changed) = (cut_flag.clone(), epochs.subscribe());
                tokio::spawn(async move {
                    // Made during a cut: held without an answer, dropped when the cut ends.
                    if cut.load(Ordering::SeqCst) {
                        let _ = changed.changed().await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Partition { addr, cut, epoch }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// Nodes over one database, sharing a workspaces folder.
struct Nodes {
    db: TestDatabase,
    ttl_ms: u64,
    shared: tempfile::TempDir,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Ohd>>,
    options: Options,
}

impl Nodes {
    async fn start(db: TestDatabase, count: usize, options: Options, ttl_ms: u64) -> Nodes {
        let mut nodes = Nodes {
            db,
            ttl_ms,
            shared: tempfile::tempdir().unwrap(),
            dirs: Vec::new(),
            nodes: Vec::new(),
            options,
        };
        for _ in 0..count {
            let url = nodes.db.url.clone();
            nodes.add(&url).await;
        }
        nodes
    }

    fn node_options(&self, database_url: &str, log: Option<std::path::PathBuf>) -> Options {
        let mut options = self.options.clone();
        options
            .env
            .push(("OHD_DATABASE_URL".into(), database_url.to_owned()));
        options.config_toml = Some(format!(
            "{}\n[store]\nworkspaces_dir = \"{}\"\n[cluster]\nlease_ttl_ms = {}\n",
            options.config_toml.clone().unwrap_or_default(),
            self.shared.path().display(),
            self.ttl_ms,
        ));
        options.log_file = log;
        options
    }

    /// Starts one more node, reaching the database at `database_url`; returns its index.
    async fn add(&mut self, database_url: &str) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ohd.log");
        let options = self.node_options(database_url, Some(log));
        let ohd = Ohd::spawn(dir.path(), &options).await;
        self.dirs.push(dir);
        self.nodes.push(Some(ohd));
        self.nodes.len() - 1
    }

    /// Starts node `index` again on its data folder (after it was killed).
    async fn restart(&mut self, index: usize) {
        let options =
            self.node_options(&self.db.url, Some(self.dirs[index].path().join("ohd.log")));
        self.nodes[index] = Some(Ohd::spawn(self.dirs[index].path(), &options).await);
    }

    fn node(&self, index: usize) -> &Ohd {
        self.nodes[index].as_ref().expect("that node was killed")
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dirs[index].path().join("ohd.log")).unwrap_or_default()
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut node) = self.nodes[index].take() {
            node.kill9();
        }
    }

    /// Which node holds the conversation's lease, with its token, once one does (with a token
    /// above `after`).
    async fn owner(&self, store: &PgStore, conversation: &str, after: i64) -> (usize, i64) {
        let id = ConversationId::parse(conversation).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(holder) = store.lease_holder(&id).await.unwrap()
                && !holder.expired
                && holder.token > after
                && let Some(index) = self.index_of(&holder.node)
            {
                return (index, holder.token);
            }
            assert!(Instant::now() < deadline, "no node took the conversation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node named `node` (`host:port/incarnation`).
    fn index_of(&self, node: &str) -> Option<usize> {
        let name = node.split('/').next()?;
        let port = name.rsplit(':').next()?;
        self.nodes.iter().position(|n| {
            n.as_ref()
                .is_some_and(|n| n.addr.rsplit(':').next() == Some(port))
        })
    }
}

fn db_addr(url: &str) -> std::net::SocketAddr {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let with_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    use std::net::ToSocketAddrs;
    with_port.to_socket_addrs().unwrap().next().unwrap()
}

/// The URL of the same database through `proxy`.
fn through(url: &str, proxy: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{proxy}/{path}")
}

/// Events of a client, as compared between clients: id and the whole JSON.
fn stream(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e["id"].is_u64())
        .map(|e| (e["id"].as_u64().unwrap(), e.to_string()))
        .collect()
}

fn assert_dense(ids: &[u64], what: &str) {
    for (i, pair) in ids.windows(2).enumerate() {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: ids not dense at {i}: {ids:?}"
        );
    }
}

/// Joins `conversation` on `node`, sends `text`, and waits for the agent's command that
/// `command` picks (any, if `None`); returns the client and the command's event id.
async fn task_until_run(
    node: &Ohd,
    conversation: &str,
    text: &str,
    command: Option<&str>,
) -> (RawClient, u64) {
    let mut client = joined(node, conversation, "-1").await;
    client.until_ready().await;
    client.send(&user_message(text)).await;
    loop {
        let e = client.next_event().await.expect("no run");
        if e["action"] == "run" && command.is_none_or(|c| e["args"]["command"] == c) {
            return (client, e["id"].as_u64().unwrap());
        }
    }
}

/// The command `run_id`, cut off by its owner's loss, is answered once, by the next owner's
/// error, and nothing the old owner's command printed late is stored; ids stay dense.
fn assert_cut_off_once(events: &[Value], run_id: u64, what: &str) {
    let answers: Vec<&Value> = events
        .iter()
        .filter(|e| e["cause"].as_u64() == Some(run_id))
        .collect();
    assert_eq!(answers.len(), 1, "{:?}", summary(events));
    assert_eq!(
        answers[0]["extras"]["error_id"],
        "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_ERROR"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["observation"] == "run" && e["content"].to_string().contains("late-output")),
        "{:?}",
        summary(events)
    );
    assert_dense(&ids(events), what);
}

async fn scripted(turns: Vec<Turn>) -> (ScriptedLlmHandle, Options) {
    scripted_llm(Script::new(turns)).await
}

#[tokio::test]
async fn cluster_clients_on_three_nodes_see_identical_streams() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, options) = scripted(vec![
        bash("echo one"),
        editor(json!({"command": "create", "path": "/workspace/a.txt", "file_text": "a\n"})),
        bash("cat a.txt"),
        finish("done on whichever node"),
    ])
    .await;
    let nodes = Nodes::start(db, 3, options, STEADY_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut client = joined(nodes.node(i), &conversation, "-1").await;
        streams.push(client.until_ready().await);
        clients.push(client);
    }
    // Sent on the last node; the agent runs wherever its lease is.
    clients[2].send(&user_message("work, please")).await;
    for (i, client) in clients.iter_mut().enumerate() {
        let events = client.until_state(&["finished"]).await;
        assert_eq!(by_kind(&events, "action", "finish").len(), 1, "node {i}");
        streams[i].extend(events);
    }
    let streams: Vec<Vec<(u64, String)>> = streams.iter().map(|s| stream(s)).collect();
    let ids: Vec<u64> = streams[0].iter().map(|(id, _)| *id).collect();
    assert_eq!(ids[0], 0);
    assert_dense(&ids, "node 0");
    assert_eq!(streams[0], streams[1], "nodes 0 and 1 differ");
    assert_eq!(streams[0], streams[2], "nodes 0 and 2 differ");
    // One workspace, seen by every node.
    let file = nodes.shared.path().join(&conversation).join("a.txt");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "a\n");
}

#[tokio::test]
async fn cluster_kill_9_of_the_owner_hands_the_conversation_over_within_seconds() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (llm, mut options) = scripted(vec![
        bash("sleep 30").with_text("A long one."),
        bash("printf %s \"$GITHUB_TOKEN\" | wc -c"),
        Turn::text("Picked up where we were."),
    ])
    .await;
    options
        .env
        .push(("GITHUB_TOKEN".into(), "ghp_cluster_token_0123".into()));
    let store = db.store().await;
    let mut nodes = Nodes::start(db, 3, options, LEASE_TTL_MS).await;
    // A conversation of a GitHub repository: its shell has the GitHub token, after a takeover too.
    let (status, created) = nodes
        .node(0)
        .post("/api/conversations", json!({"git_provider": "github"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let conversation = created["conversation_id"].as_str().unwrap().to_owned();
    let (owner, token) = nodes.owner(&store, &conversation, 0).await;
    let watchers: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let mut clients = Vec::new();
    for &i in &watchers {
        let mut client = joined(nodes.node(i), &conversation, "-1").await;
        client.until_ready().await;
        clients.push(client);
    }
    clients[0].send(&user_message("first task")).await;
    // The command runs on the owner; then the owner dies.
    loop {
        let e = clients[0].next_event().await.expect("no run");
        if e["action"] == "run" {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    nodes.kill(owner);
    let (next_owner, next_token) = nodes.owner(&store, &conversation, token).await;
    let took = killed.elapsed();
    assert_ne!(next_owner, owner);
    assert!(next_token > token, "{next_token} <= {token}");
    assert!(
        took <= Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(5),
        "taken over {took:?} after the kill (lease {LEASE_TTL_MS} ms)"
    );
    // The cut-off command is answered once, with an error, and the agent waits for input.
    for client in &mut clients {
        let events = client
            .until_state_from(&["awaiting_user_input"], true)
            .await;
        assert!(
            events
                .iter()
                .any(|e| e["extras"]["error_id"] == "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_ERROR"),
            "{:?}",
            summary(&events)
        );
    }
    // The next message carries on with the whole history, on the new owner.
    clients[1].send(&user_message("go on")).await;
    for client in &mut clients {
        let events = client.until_state(&["awaiting_user_input"]).await;
        let token_length = by_kind(&events, "observation", "run")[0]["content"].clone();
        assert_eq!(token_length, "22\n", "{:?}", summary(&events));
    }
    let last = llm.requests().last().cloned().unwrap();
    let text = last["messages"].to_string();
    assert!(text.contains("first task") && text.contains("go on") && text.contains("sleep 30"));
    // Every client's stream, from the start: dense, identical, each action answered once.
    let mut streams = Vec::new();
    for &i in &watchers {
        let events = nodes.node(i).events(&conversation).await;
        streams.push(stream(&events));
        let answers: Vec<u64> = events
            .iter()
            .filter(|e| e["observation"].is_string() && e["cause"].is_u64())
            .map(|e| e["cause"].as_u64().unwrap())
            .collect();
        let mut unique = answers.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            answers.len(),
            unique.len(),
            "an action answered twice: {answers:?}"
        );
    }
    let ids: Vec<u64> = streams[0].iter().map(|(id, _)| *id).collect();
    assert_dense(&ids, "after the takeover");
    assert_eq!(streams[0], streams[1]);
}

#[tokio::test]
async fn cluster_a_node_cut_off_from_the_database_stops_its_agent_before_its_lease_lapses() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, options) = scripted(vec![
        bash("sleep 6; echo late-output").with_text("Working."),
        Turn::text("Resumed elsewhere."),
    ])
    .await;
    let store = db.store().await;
    let partition = Partition::start(db_addr(&db.url)).await;
    let cut_url = through(&db.url, partition.addr);
    let mut nodes = Nodes::start(db, 2, options, LEASE_TTL_MS).await;
    // The third node reaches the database through the partition, and owns the conversation.
    let cut_node = nodes.add(&cut_url).await;
    let conversation = nodes.node(cut_node).create_conversation().await;
    let (owner, token) = nodes.owner(&store, &conversation, 0).await;
    assert_eq!(owner, cut_node);
    let (mut client, run_id) =
        task_until_run(nodes.node(0), &conversation, "a long task", None).await;
    partition.set_cut(true);
    let (next_owner, next_token) = nodes.owner(&store, &conversation, token).await;
    assert_ne!(next_owner, cut_node);
    assert!(next_token > token);
    client
        .until_state_from(&["awaiting_user_input"], true)
        .await;
    // Still cut off, the old owner has stopped its agent: its lease was no longer sure.
    let deadline = Instant::now() + Duration::from_secs(10);
    // Two lines, written by two tasks: both are waited for.
    while !(nodes.log(cut_node).contains("could not be renewed in time")
        && nodes
            .log(cut_node)
            .contains("no longer holds the conversation's lease"))
    {
        assert!(
            Instant::now() < deadline,
            "the cut-off node's agent goes on:\n{}",
            nodes.log(cut_node)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back on the network, the old owner writes nothing more of the conversation's.
    partition.set_cut(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for line in nodes.log(cut_node).lines().filter(|l| l.contains("lease")) {
        eprintln!("cut-off node: {line}");
    }
    let events = nodes.node(0).events(&conversation).await;
    assert_cut_off_once(&events, run_id, "after the partition");
}

#[tokio::test]
async fn cluster_a_node_restarted_under_load_catches_up() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // Event relay only: the load is clients' messages.
    let mut nodes = Nodes::start(db, 2, Options::new(), STEADY_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let writer_url = nodes.node(0).ws_url(&format!(
        "conversation_id={conversation}&latest_event_id=-1"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut writer = RawClient::open(&writer_url).await;
            writer.connect("").await;
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                writer.send(&user_message(&format!("m{sent}"))).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes.kill(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes.restart(1).await;
    let mut late = joined(nodes.node(1), &conversation, "-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = writing.await.unwrap();
    assert!(sent > 100, "only {sent} messages sent");
    // The last messages sent may still be on their way to the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = nodes.node(0).events(&conversation).await;
        if stored.len() as u64 >= sent || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored.len() as u64, sent);
    let seen = late.events(stored.len()).await;
    assert_eq!(stream(&seen), stream(&stored));
}

/// nginx in front of `nodes`, as the README shows it: a websocket that opens without a session
/// id (a websocket-only client) may go to any node; everything of a long-polling session
/// (its handshake, its polls, its upgrade) goes to one node, chosen by the client's address.
fn nginx_config(dir: &std::path::Path, port: u16, nodes: &[&Ohd]) -> String {
    let servers: String = nodes
        .iter()
        .map(|n| format!("        server {};\n", n.addr))
        .collect();
    let d = dir.display();
    format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
{config}\n    server {{\n        listen 127.0.0.1:{port};\n{location}    }}\n}}\n",
        config = README_NGINX_UPSTREAMS.replace("        server 127.0.0.1:3001;\n        server 127.0.0.1:3002;\n        server 127.0.0.1:3003;\n", &servers),
        location = README_NGINX_LOCATION,
    )
}

/// The README's nginx configuration, in two parts (the test fills in its own servers and
/// paths); the README's copy is checked to hold these lines.
const README_NGINX_UPSTREAMS: &str = "    upstream ohd_any {
        server 127.0.0.1:3001;
        server 127.0.0.1:3002;
        server 127.0.0.1:3003;
    }
    upstream ohd_sticky {
        ip_hash;
        server 127.0.0.1:3001;
        server 127.0.0.1:3002;
        server 127.0.0.1:3003;
    }
    # A websocket opened without a session id may go to any node; a long-polling session
    # (its handshake, polls and upgrade, which carry its sid) stays on one node.
    map \"$arg_transport:$arg_sid\" $ohd_upstream {
        \"websocket:\" ohd_any;
        default ohd_sticky;
    }
    map $http_upgrade $connection_upgrade {
        default upgrade;
        '' close;
    }";

const README_NGINX_LOCATION: &str = "        location / {
            proxy_pass http://$ohd_upstream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
";

#[test]
fn the_readme_shows_the_nginx_configuration_the_test_runs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for part in [README_NGINX_UPSTREAMS, README_NGINX_LOCATION] {
        assert!(readme.contains(part), "the README lacks:\n{part}");
    }
}

/// Starts nginx with `config` in `dir`; `None` (after saying so) when there is none, outside CI.
fn nginx_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let nginx = std::path::PathBuf::from("/usr/sbin/nginx");
    if nginx.exists() {
        return Some(nginx);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{test}: no nginx (apt-get install nginx)");
    eprintln!("skipping {test}: no nginx (apt-get install nginx)");
    None
}

#[tokio::test]
async fn cluster_behind_nginx_socket_io_client_works_over_websocket_and_long_polling() {
    let Some(nginx) = nginx_or_skip("three nodes behind nginx") else {
        return;
    };
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, options) = scripted(vec![
        bash("echo through-nginx"),
        finish("done behind nginx"),
    ])
    .await;
    let nodes = Nodes::start(db, 3, options, STEADY_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("nginx.conf");
    std::fs::write(
        &config,
        nginx_config(
            dir.path(),
            port,
            &[nodes.node(0), nodes.node(1), nodes.node(2)],
        ),
    )
    .unwrap();
    let status = std::process::Command::new(&nginx)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "nginx did not start");
    struct Stop(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.0)
                .arg("-c")
                .arg(&self.1)
                .args(["-s", "stop"])
                .status();
        }
    }
    let _stop = Stop(nginx.clone(), config.clone());
    let url = format!("http://127.0.0.1:{port}");
    let client = |transport: &str, send: bool| {
        let mut args: Vec<String> = [
            "--conversation",
            &conversation,
            "--transport",
            transport,
            "--until-state",
            "finished",
            "--timeout-ms",
            "30000",
        ]
        .map(str::to_owned)
        .to_vec();
        if send {
            let message = json!({"action": "message", "args": {"content": "go"}}).to_string();
            args.extend([
                "--send".to_owned(),
                message,
                "--send-after-ms".to_owned(),
                "2500".to_owned(),
            ]);
        }
        let url = url.clone();
        tokio::spawn(async move { seed_client_at(&url, &args).await })
    };
    let runs = vec![
        client("websocket", true),
        client("websocket", false),
        client("websocket", false),
        client("polling", false),
    ];
    // While they wait: the websockets are spread over the nodes, each node serving some.
    let deadline = Instant::now() + Duration::from_secs(10);
    let per_node = loop {
        let mut counts = Vec::new();
        for i in 0..3 {
            let (_, info) = nodes
                .node(i)
                .get(&format!("/api/conversations/{conversation}"))
                .await;
            counts.push(info["num_connections"].as_u64().unwrap_or(0));
        }
        if counts.iter().sum::<u64>() == 4 || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(per_node.iter().sum::<u64>(), 4, "{per_node:?}");
    assert!(
        per_node.iter().all(|n| *n >= 1),
        "not every node serves a client: {per_node:?}"
    );
    let mut streams = Vec::new();
    for run in runs {
        let run = run.await.unwrap();
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        streams.push(stream(&run.events));
    }
    assert!(streams[0].iter().any(|(_, e)| e.contains("through-nginx")));
    for (i, s) in streams.iter().enumerate().skip(1) {
        assert_eq!(&streams[0], s, "client {i} saw another stream");
    }
}

/// A command's processes still alive on this machine, by a word of its command line.
fn processes_with(word: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            String::from_utf8_lossy(cmdline)
                .split('\0')
                .any(|arg| arg == word)
        })
        .count()
}

#[tokio::test]
async fn cluster_a_stop_asked_on_another_node_ends_the_owners_agent_and_its_processes() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    // A background process and a foreground one: both must end with the stop.
    let (_llm, options) = scripted(vec![
        bash("(sleep 97.25 &) ; echo started"),
        bash("sleep 96.25"),
        finish("never reached"),
    ])
    .await;
    let store = db.store().await;
    let nodes = Nodes::start(db, 2, options, LEASE_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let (owner, _) = nodes.owner(&store, &conversation, 0).await;
    let other = 1 - owner;
    let (mut client, _) = task_until_run(
        nodes.node(other),
        &conversation,
        "start things",
        Some("sleep 96.25"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_with("97.25"),
        1,
        "the background process is not running"
    );
    let (status, answer) = nodes
        .node(other)
        .post(
            &format!("/api/conversations/{conversation}/stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"], "Conversation stopped successfully");
    // The owner ends its agent at its next renewal, and its shell takes everything with it.
    let deadline = Instant::now() + Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(3);
    while processes_with("97.25") + processes_with("96.25") > 0 {
        assert!(
            Instant::now() < deadline,
            "the owner's processes outlive the stop:\n{}",
            nodes.log(owner)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = client.until_state_from(&["stopped"], true).await;
    // The stop is the user's, in the log, and the owner was fenced out or let go.
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "change_agent_state" && e["source"] == "user"),
        "{:?}",
        summary(&events)
    );
    let log = nodes.log(owner);
    assert!(
        log.contains("no longer holds the conversation's lease") || log.contains("lease lost"),
        "{log}"
    );
    // A message after the stop is answered, by a new agent on whichever node takes it.
    client.send(&user_message("and now?")).await;
    let events = client.until_state(&["finished"]).await;
    assert_eq!(
        by_kind(&events, "action", "finish").len(),
        1,
        "{:?}",
        summary(&events)
    );
}

#[tokio::test]
async fn cluster_an_owner_paused_past_its_lease_is_fenced_out_when_it_wakes() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, options) = scripted(vec![
        bash("sleep 3; echo late-output").with_text("Working."),
        Turn::text("Resumed elsewhere."),
    ])
    .await;
    let store = db.store().await;
    let nodes = Nodes::start(db, 2, options, LEASE_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let (owner, token) = nodes.owner(&store, &conversation, 0).await;
    let other = 1 - owner;
    let (mut client, run_id) =
        task_until_run(nodes.node(other), &conversation, "a task", None).await;
    // Paused (SIGSTOP) while its command runs on: the lease lapses and the other node takes over.
    let pid = nodes.node(owner).pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    let (next_owner, next_token) = nodes.owner(&store, &conversation, token).await;
    assert_eq!(next_owner, other);
    assert!(next_token > token);
    client
        .until_state_from(&["awaiting_user_input"], true)
        .await;
    // By now the command has finished: woken, the old owner's agent has its output to write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !nodes.log(owner).contains("lease lost") {
        assert!(
            Instant::now() < deadline,
            "the woken owner wrote nothing, or was not refused:\n{}",
            nodes.log(owner)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = nodes.node(other).events(&conversation).await;
    assert_cut_off_once(&events, run_id, "after the pause");
}

#[tokio::test]
async fn cluster_a_delete_asked_on_another_node_ends_the_owners_agent_and_its_layer() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, options) = scripted(vec![bash("echo in-the-layer > /tmp/mark; sleep 95.25")]).await;
    let store = db.store().await;
    let nodes = Nodes::start(db, 2, options, LEASE_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let (owner, _) = nodes.owner(&store, &conversation, 0).await;
    let other = 1 - owner;
    let (_client, _) = task_until_run(nodes.node(other), &conversation, "start", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("95.25") == 0 {
        assert!(Instant::now() < deadline, "the command never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // As root, the agent's shell has a writable system layer on its owner's disk.
    let layer = nodes.dirs[owner]
        .path()
        .join("sandboxes")
        .join(&conversation);
    let layered = layer.exists();
    let response = nodes
        .node(other)
        .http
        .delete(
            nodes
                .node(other)
                .url(&format!("/api/conversations/{conversation}")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(3);
    while processes_with("95.25") > 0 || (layered && layer.exists()) {
        assert!(
            Instant::now() < deadline,
            "the owner keeps the deleted conversation's {}:\n{}",
            if layer.exists() { "layer" } else { "processes" },
            nodes.log(owner)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !layered {
        eprintln!(
            "no writable system layer here (not root, or no bubblewrap): only the processes were checked"
        );
    }
    assert!(!nodes.shared.path().join(&conversation).exists());
}

#[tokio::test]
async fn cluster_an_agent_someone_watches_from_another_node_is_not_released_for_being_idle() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (_llm, mut options) =
        scripted_llm(Script::new(vec![Turn::text("Here.")]).repeating_last()).await;
    options.config_toml = Some("[agent]\nidle_timeout_secs = 6\n".into());
    let store = db.store().await;
    let nodes = Nodes::start(db, 2, options, STEADY_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let (owner, _) = nodes.owner(&store, &conversation, 0).await;
    let other = 1 - owner;
    // Looked at only from the other node (only releases from then on count).
    let mut client = joined(nodes.node(other), &conversation, "-1").await;
    let joined_at = nodes.log(owner).len();
    client.until_ready().await;
    client.send(&user_message("hello")).await;
    client.until_state(&["awaiting_user_input"]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !nodes.log(owner)[joined_at..].contains("agent idle: released"),
        "released while watched from another node"
    );
    // Still the same agent: no new start before it answers.
    client.send(&user_message("still there?")).await;
    let events = client.until_state(&["awaiting_user_input"]).await;
    assert!(
        !events
            .iter()
            .any(|e| e["extras"]["agent_state"] == "loading"),
        "{:?}",
        summary(&events)
    );
    // Nobody looks any more: it is released, as on one node.
    client.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.log(owner)[joined_at..].contains("agent idle: released") {
        assert!(
            Instant::now() < deadline,
            "never released once nobody looked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn cluster_providers_named_on_another_node_reach_the_owners_shell() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let token = "glpat_cluster_token_4567";
    let (_llm, mut options) = scripted(vec![
        bash("printf %s \"$GITLAB_TOKEN\" | wc -c"),
        Turn::text("Counted."),
    ])
    .await;
    options.env.push(("GITLAB_TOKEN".into(), token.into()));
    let store = db.store().await;
    let nodes = Nodes::start(db, 2, options, STEADY_TTL_MS).await;
    let conversation = nodes.node(0).create_conversation().await;
    let (owner, _) = nodes.owner(&store, &conversation, 0).await;
    let other = 1 - owner;
    // As the web UI does on opening a conversation, on whichever node the balancer picked.
    let (status, started) = nodes
        .node(other)
        .post(
            &format!("/api/conversations/{conversation}/start"),
            json!({"providers_set": ["gitlab"]}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["conversation_status"], "RUNNING");
    // The owner takes named providers in at its next beat (every 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = joined(nodes.node(other), &conversation, "-1").await;
    client.until_ready().await;
    client.send(&user_message("count it")).await;
    let events = client.until_state(&["awaiting_user_input"]).await;
    let counted = by_kind(&events, "observation", "run")[0]["content"].clone();
    assert_eq!(
        counted,
        format!("{}\n", token.len()),
        "{:?}",
        summary(&events)
    );
    assert!(!events.iter().any(|e| e.to_string().contains(token)));
}

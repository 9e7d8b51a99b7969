//! Servers over SSH end to end: a real OpenSSH server (Debian's `openssh-server`) with a
//! throwaway user, the real `maas-api`, `maas-worker`s and `maas-agent`, real PostgreSQL and
//! Redis. The terminal is driven over its WebSocket (tokio-tungstenite) and, in a browser,
//! through the console page in headless Chromium.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use maas_tests::cluster::{Cluster, WAIT, alive, kill9};
use maas_tests::eventually;
use maas_tests::sshd::{PASSWORD, Sshd};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Registers a server at 127.0.0.1 with the SSH access `access` (port and user filled in).
async fn ssh_server(c: &Cluster, sshd: &Sshd, name: &str, access: Value) -> String {
    let (id, _) = c.server(name, 0).await;
    let mut body = access;
    body["port"] = json!(sshd.port);
    body["username"] = json!(sshd.user);
    let (status, set) = c
        .send(
            reqwest::Method::PUT,
            &format!("/servers/{id}/ssh"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        set["host_key"],
        Value::Null,
        "nothing is pinned before a connection"
    );
    id
}

async fn ticket(c: &Cluster, id: &str, body: Value) -> Value {
    let (status, t) = c
        .send(
            reqwest::Method::POST,
            &format!("/servers/{id}/terminal-ticket"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t
}

/// Opens the terminal WebSocket; a refusal answers its status and problem body.
async fn open(c: &Cluster, url: &str, origin: Option<&str>) -> Result<Ws, (u16, Value)> {
    let ws_url = format!("{}{url}", c.base.replacen("http://", "ws://", 1));
    let mut request = ws_url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("WebSocket to {url} failed: {e}"),
    }
}

/// Reads the terminal until its output contains `needle`; answers all output read so far
/// and the JSON events seen.
async fn read_until(ws: &mut Ws, needle: &str) -> (String, Vec<Value>) {
    let mut screen = String::new();
    let mut events = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => screen.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => {
                    let event: Value = serde_json::from_str(&t).unwrap();
                    let kind = event["type"].as_str().unwrap_or_default().to_owned();
                    events.push(event);
                    if kind == needle {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
            if screen.contains(needle) {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok() && (screen.contains(needle) || events.iter().any(|e| e["type"] == needle)),
        "never saw {needle:?}; screen: {screen:?}, events: {events:?}"
    );
    (screen, events)
}

/// Reads the terminal until it sends the JSON event `kind`; answers the events seen.
async fn read_event(ws: &mut Ws, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let event: Value = serde_json::from_str(&t).unwrap();
                let done = event["type"] == kind;
                events.push(event);
                if done {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "never saw the {kind} event: {events:?}");
    events
}

async fn type_in(ws: &mut Ws, keys: &str) {
    ws.send(Message::Binary(keys.as_bytes().to_vec().into()))
        .await
        .unwrap();
}

async fn terminal_audits(c: &Cluster) -> Vec<Value> {
    use sea_orm::{ConnectionTrait as _, Statement};
    let db = c.app.db().await;
    db.query_all(Statement::from_string(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT details::text AS d FROM audit_events WHERE action = 'server.terminal' ORDER BY at",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| serde_json::from_str(&r.try_get::<String>("", "d").unwrap()).unwrap())
    .collect()
}

async fn everything_said(c: &Cluster, sshd: &Sshd, extra: &str) -> String {
    use sea_orm::{ConnectionTrait as _, Statement};
    let db = c.app.db().await;
    let rows = db
        .query_all(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT details::text AS d FROM audit_events",
        ))
        .await
        .unwrap();
    let audit: String = rows
        .iter()
        .map(|r| r.try_get::<String>("", "d").unwrap())
        .collect();
    let stored: Vec<u8> = db
        .query_all(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT credential_sealed AS c FROM server_ssh",
        ))
        .await
        .unwrap()
        .iter()
        .flat_map(|r| r.try_get::<Vec<u8>>("", "c").unwrap())
        .collect();
    format!(
        "{}\n{audit}\n{}\n{}\n{extra}",
        c.logs(),
        String::from_utf8_lossy(&stored),
        sshd.log()
    )
}

fn assert_no_secret(said: &str, sshd: &Sshd) {
    assert!(!said.contains(PASSWORD), "the password leaked");
    assert!(
        !said.contains("quoted\\\" pass"),
        "the password leaked (escaped)"
    );
    let key_body: String = sshd
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!said.contains(&key_body[..40]), "the private key leaked");
}

#[tokio::test]
async fn the_terminal_bridges_a_websocket_to_an_ssh_pty_by_single_use_tickets() {
    let sshd = Sshd::start().await;
    let c = Cluster::start(
        &[
            ("MAAS__COMPUTE__TERMINAL_IDLE_SECS", "3"),
            ("MAAS__COMPUTE__TERMINAL_TICKET_TTL_SECS", "2"),
        ],
        0,
    )
    .await;
    let id = ssh_server(&c, &sshd, "ssh-1", json!({"password": PASSWORD})).await;

    // A session over SSH: typed input, a pty, the pinned host key.
    let t = ticket(&c, &id, json!({"cols": 90, "rows": 20})).await;
    assert_eq!(t["via"], "ssh");
    let url = t["websocket_url"].as_str().unwrap().to_owned();
    let mut first = open(&c, &url, Some(&c.base)).await.unwrap();
    type_in(&mut first, "echo h''i; tty\r").await;
    let (screen, _) = read_until(&mut first, "/dev/pts/").await;
    assert!(screen.contains("\rhi\r\n/dev/pts/"), "{screen:?}");
    let access = c.get(&format!("/servers/{id}/ssh")).await;
    assert_eq!(access["host_key"]["fingerprint"], sshd.host_fingerprint());
    assert_eq!(access["host_key"]["algorithm"], "ssh-ed25519");
    assert_eq!(access["auth"], "password");
    assert!(access.get("password").is_none(), "{access}");

    // The size given with the ticket, then a resize frame.
    type_in(&mut first, "stty size\r").await;
    read_until(&mut first, "20 90").await;
    first
        .send(Message::text(
            json!({"type": "resize", "cols": 132, "rows": 41}).to_string(),
        ))
        .await
        .unwrap();
    type_in(&mut first, "stty size\r").await;
    read_until(&mut first, "41 132").await;
    // A bad frame is answered, not fatal.
    first
        .send(Message::text(
            json!({"type": "resize", "cols": 0, "rows": 41}).to_string(),
        ))
        .await
        .unwrap();
    let events = read_event(&mut first, "error").await;
    assert_eq!(events.last().unwrap()["code"], "bad_frame");

    // A second session at the same time, with an auto_command.
    let t2 = ticket(&c, &id, json!({"auto_command": "echo auto-$((40+2))"})).await;
    let mut second = open(&c, t2["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    read_until(&mut second, "auto-42").await;
    type_in(&mut first, "echo still-$((1+1))\r").await;
    read_until(&mut first, "still-2").await;
    first.close(None).await.unwrap();

    // A spent ticket, an expired one, a wrong Origin, a non-admin: refused.
    let (status, body) = open(&c, &url, None).await.err().unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("terminal_ticket_invalid"))
    );
    let t3 = ticket(&c, &id, json!({})).await;
    let (status, body) = open(
        &c,
        t3["websocket_url"].as_str().unwrap(),
        Some("https://evil.example"),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("origin_not_allowed"))
    );
    // The refused Origin did not spend the ticket: it still opens, once.
    let mut third = open(&c, t3["websocket_url"].as_str().unwrap(), Some(&c.base))
        .await
        .unwrap();
    type_in(&mut third, "exit\r").await;
    let events = read_event(&mut third, "exit").await;
    assert_eq!(events.last().unwrap()["status"], 0);
    let t4 = ticket(&c, &id, json!({})).await;
    let key = c.app.keyspace.key(&format!(
        "compute:terminal-ticket:{}",
        sha256_hex(t4["ticket"].as_str().unwrap())
    ));
    let gone = eventually(Duration::from_secs(10), || {
        let key = key.clone();
        let pool = c.app.redis();
        async move {
            let mut conn = pool.get().await.unwrap();
            let exists: i64 = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            (exists == 0).then_some(())
        }
    })
    .await;
    assert!(gone.is_some(), "the ticket never expired");
    let (status, _) = open(&c, t4["websocket_url"].as_str().unwrap(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    let (_, dev) = c.app.user_with_token("dev", &["developer"]).await;
    let refused = c
        .client
        .post(c.url(&format!("/servers/{id}/terminal-ticket")))
        .bearer_auth(&dev)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let plain = c
        .client
        .get(c.url(&format!("/servers/{id}/terminal?ticket=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST, "not an upgrade");

    // Idle: no input for 3 s closes the session with an event.
    let events = read_event(&mut second, "idle_timeout").await;
    assert_eq!(events.last().unwrap()["type"], "idle_timeout");

    // Every session is audited: who, how long, bytes; three ended (idle, exit, closed).
    let audits = eventually(Duration::from_secs(10), || async {
        let a = terminal_audits(&c).await;
        (a.len() == 3).then_some(a)
    })
    .await
    .expect("three audited terminal sessions");
    let ended: Vec<&str> = audits
        .iter()
        .map(|a| a["ended_by"].as_str().unwrap())
        .collect();
    assert!(
        ended.contains(&"idle_timeout") && ended.contains(&"exit") && ended.contains(&"client"),
        "{ended:?}"
    );
    for a in &audits {
        assert_eq!(a["via"], "ssh");
        assert!(
            a["bytes_out"].as_u64().unwrap() > 0 && a["bytes_in"].as_u64().unwrap() > 0,
            "{a}"
        );
        assert!(a["duration_ms"].as_i64().unwrap() >= 0);
    }
    let said = everything_said(&c, &sshd, &access.to_string()).await;
    assert_no_secret(&said, &sshd);
}

/// The hex SHA-256 of a ticket (the Redis key names its digest, not the ticket).
fn sha256_hex(ticket: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ticket.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_changed_host_key_is_refused_until_an_admin_repins_it_and_resources_fail_one_by_one() {
    let mut sshd = Sshd::start().await;
    let c = Cluster::start(&[], 1).await;
    let id = ssh_server(
        &c,
        &sshd,
        "ssh-key",
        json!({"private_key": sshd.private_key.clone()}),
    )
    .await;
    let check_path = format!("/servers/{id}/check");

    let (status, first) = c.send(reqwest::Method::POST, &check_path, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "online", "{first}");
    assert!(first["ssh"]["ok"].as_bool().unwrap() && first["tcp"]["ok"].as_bool().unwrap());
    assert_eq!(first["agent"], Value::Null, "no agent joined");
    let last = c.get(&format!("/servers/{id}/check")).await;
    let micros = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    assert_eq!(last["status"], "online");
    assert_eq!(
        micros(&last["checked_at"]),
        micros(&first["checked_at"]),
        "the stored check is the one made"
    );
    let pinned = sshd.host_fingerprint();
    assert_eq!(
        c.get(&format!("/servers/{id}/ssh")).await["host_key"]["fingerprint"],
        pinned
    );

    // Resources over SSH (no agent): each figure on its own; a broken `df` fails only disks.
    let r = c.get(&format!("/servers/{id}/resources")).await;
    assert_eq!(r["source"], "ssh", "{r}");
    let nproc = std::process::Command::new("nproc").output().unwrap();
    let cores: u64 = String::from_utf8_lossy(&nproc.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(r["cpu"]["value"]["cores"], cores, "{r}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r["memory"]["value"]["total_bytes"], total_kib * 1024, "{r}");
    assert!(!r["disks"]["value"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["gpus"]["value"], json!([]), "no nvidia-smi: no GPUs");
    sshd.write_home(".bash_profile", "export PATH=\"$HOME/bin:$PATH\"\n", 0o644);
    sshd.write_home(
        "bin/df",
        "#!/bin/sh\necho 'df: broken disk' >&2\nexit 3\n",
        0o755,
    );
    let r = c.get(&format!("/servers/{id}/resources")).await;
    assert_eq!(r["disks"]["error_code"], "command_failed", "{r}");
    assert!(
        r["disks"]["error"]
            .as_str()
            .unwrap()
            .contains("broken disk"),
        "{r}"
    );
    assert_eq!(
        r["cpu"]["value"]["cores"], cores,
        "the other figures still come: {r}"
    );
    assert_eq!(r["memory"]["value"]["total_bytes"], total_kib * 1024);
    let (status, many) = c
        .send(
            reqwest::Method::POST,
            "/servers/resources",
            Some(json!({"server_ids": [id]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(many.as_array().unwrap().len(), 1);

    // The host changes its key: checks, terminals and tasks are refused with a clear code.
    sshd.change_host_key().await;
    assert_ne!(sshd.host_fingerprint(), pinned);
    let (_, changed) = c.send(reqwest::Method::POST, &check_path, None).await;
    assert_eq!(changed["status"], "degraded", "{changed}");
    assert_eq!(
        changed["ssh"]["error_code"], "ssh_host_key_changed",
        "{changed}"
    );
    let t = ticket(&c, &id, json!({})).await;
    let (status, body) = open(&c, t["websocket_url"].as_str().unwrap(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("ssh_host_key_changed"))
    );
    assert!(body["detail"].as_str().unwrap().contains(&pinned), "{body}");
    let (_, task) = c
        .send(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"name": "uptime", "command": "uptime", "server_ids": [id], "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}})),
        )
        .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let run = run_now(&c, &task_id).await;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .starts_with("ssh_host_key_changed"),
        "{run}"
    );

    // Re-pin: the new key is pinned and everything works again.
    let (status, repinned) = c
        .send(
            reqwest::Method::POST,
            &format!("/servers/{id}/ssh/repin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{repinned}");
    assert_eq!(repinned["host_key"]["fingerprint"], sshd.host_fingerprint());
    let (_, again) = c.send(reqwest::Method::POST, &check_path, None).await;
    assert_eq!(again["status"], "online", "{again}");
    assert_eq!(run_now(&c, &task_id).await["state"], "succeeded");

    // check-all covers every server; a server without access is graded by TCP only.
    let (other, _) = c.server("no-ssh", 0).await;
    let (status, all) = c
        .send(reqwest::Method::POST, "/servers/check-all", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2);
    let no_ssh = all
        .iter()
        .find(|a| a["server_id"] == other.as_str())
        .unwrap();
    assert_eq!(no_ssh["ssh"], Value::Null);
    let said = everything_said(&c, &sshd, &format!("{repinned} {all:?}")).await;
    assert_no_secret(&said, &sshd);
}

/// Runs a task now on its one server and waits for the run to end.
async fn run_now(c: &Cluster, task: &str) -> Value {
    let (status, queued) = c
        .send(reqwest::Method::POST, &format!("/tasks/{task}/run"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = queued["runs"][0]["id"].as_str().unwrap().to_owned();
    finished(c, task, &run).await
}

async fn finished(c: &Cluster, task: &str, run: &str) -> Value {
    let path = format!("/tasks/{task}/runs/{run}");
    eventually(WAIT, || async {
        let r = c.get(&path).await;
        (!matches!(r["state"].as_str(), Some("queued" | "running"))).then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("run {run} never ended"))
}

#[tokio::test]
async fn remote_tasks_fire_once_per_tick_with_two_workers_and_keep_exact_results() {
    let sshd = Sshd::start().await;
    let c = Cluster::start(&[], 2).await;
    let id = ssh_server(&c, &sshd, "ssh-tasks", json!({"password": PASSWORD})).await;
    let scratch = sshd.scratch();
    let create = |body: Value| {
        let c = &c;
        async move {
            let (status, t) = c.send(reqwest::Method::POST, "/tasks", Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{t}");
            t["id"].as_str().unwrap().to_owned()
        }
    };

    // A cron task every second, two workers ticking: one run per due second, never two.
    let cron = create(json!({"name": "tick", "command": "echo tick", "server_ids": [id], "schedule": {"kind": "cron", "cron": "* * * * * *"}})).await;
    let runs_of = |task: String| {
        let c = &c;
        async move {
            c.get(&format!("/tasks/{task}/runs?limit=200")).await["data"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let enough = eventually(WAIT, || async {
        let runs = runs_of(cron.clone()).await;
        let done = runs.iter().filter(|r| r["state"] == "succeeded").count();
        (done >= 4).then_some(())
    })
    .await;
    assert!(
        enough.is_some(),
        "the cron task never ran 4 times: {:?}",
        runs_of(cron.clone()).await
    );
    let (status, disabled) = c
        .send(
            reqwest::Method::PATCH,
            &format!("/tasks/{cron}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disabled["next_run_at"], Value::Null);
    let runs = eventually(WAIT, || async {
        let runs = runs_of(cron.clone()).await;
        runs.iter()
            .all(|r| !matches!(r["state"].as_str(), Some("queued" | "running")))
            .then_some(runs)
    })
    .await
    .unwrap();
    let mut due: Vec<&str> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().unwrap())
        .collect();
    let total = due.len();
    due.sort_unstable();
    due.dedup();
    assert_eq!(due.len(), total, "a due time ran twice: {runs:?}");
    for r in &runs {
        assert_eq!(
            (
                r["state"].as_str(),
                r["stdout"].as_str(),
                r["exit_code"].as_i64()
            ),
            (Some("succeeded"), Some("tick\n"), Some(0)),
            "{r}"
        );
        assert_eq!(r["trigger"], "schedule");
        assert_eq!(r["via"], "ssh");
    }
    let counted = c
        .app
        .count(&format!(
            "SELECT count(*) FROM remote_task_runs WHERE task_id = '{cron}'"
        ))
        .await;
    assert_eq!(counted as usize, total);

    // A timeout kills the remote command (its whole group), and says so.
    let pid_file = scratch.join("sleep.pid");
    let slow = create(json!({
        "name": "slow",
        "command": format!("sleep 120 & echo $! > {}; wait", pid_file.display()),
        "server_ids": [id], "timeout_secs": 2,
        "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}
    }))
    .await;
    let run = run_now(&c, &slow).await;
    assert_eq!(run["state"], "timed_out", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("timeout of 2 s"),
        "{run}"
    );
    assert!(run["duration_ms"].as_u64().unwrap() >= 2000, "{run}");
    let pid: u64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed = eventually(Duration::from_secs(10), || async move {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(
        killed.is_some(),
        "the remote sleep {pid} outlived its timeout"
    );

    // A large output is cut at the limit and marked.
    let big = create(json!({
        "name": "big", "command": "head -c 100000 /dev/zero | tr '\\0' x; echo done >&2",
        "server_ids": [id], "output_limit_bytes": 1000,
        "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}
    }))
    .await;
    let run = run_now(&c, &big).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"].as_str().unwrap(), "x".repeat(1000));
    assert_eq!(
        (
            run["stdout_truncated"].as_bool(),
            run["stderr_truncated"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(run["stderr"], "done\n");

    // A command with quotes, `;` and `$()` runs exactly as written.
    let marker = scratch.join("pwned");
    let exact = create(json!({
        "name": "exact",
        "command": format!("printf '%s\\n' \"it's; fine\" '$(touch {m})' \"$(echo ran)\"; exit 7", m = marker.display()),
        "server_ids": [id],
        "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}
    }))
    .await;
    let run = run_now(&c, &exact).await;
    assert_eq!(
        run["stdout"].as_str().unwrap(),
        format!("it's; fine\n$(touch {})\nran\n", marker.display())
    );
    assert_eq!(
        (run["state"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(7))
    );
    assert!(!marker.exists(), "a quoted $() ran");

    // Results are kept: the history lists each run, newest first.
    let history = runs_of(exact.clone()).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], run["id"]);
    let (status, bad) = c
        .send(reqwest::Method::POST, "/tasks", Some(json!({"name": "bad name", "command": "", "server_ids": [], "schedule": {"kind": "cron", "cron": "nope"}, "timeout_secs": 0})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "command",
            "server_ids",
            "schedule.cron",
            "timeout_secs"
        ],
        "{bad}"
    );
    let said = everything_said(&c, &sshd, "").await;
    assert_no_secret(&said, &sshd);
}

#[tokio::test]
async fn a_server_without_ssh_access_runs_tasks_and_terminals_through_its_agent() {
    let mut c = Cluster::start(&[], 1).await;
    let (id, _, _) = c.node("agent-only", 4).await;
    let (status, body) = c
        .send(
            reqwest::Method::POST,
            &format!("/servers/{id}/terminal-ticket"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("no_remote_access")),
        "{body}"
    );
    let agent = c.get(&format!("/servers/{id}")).await["agent"]["url"].clone();
    let (status, approved) = c
        .send(
            reqwest::Method::POST,
            &format!("/servers/{id}/agent/approve"),
            Some(json!({"agent_url": agent})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    // The agent hands its secret over with its next instance report.
    let t = eventually(WAIT, || async {
        let (status, t) = c
            .send(
                reqwest::Method::POST,
                &format!("/servers/{id}/terminal-ticket"),
                Some(json!({})),
            )
            .await;
        (status == StatusCode::CREATED).then_some(t)
    })
    .await
    .expect("the agent never became reachable for terminals");
    assert_eq!(t["via"], "agent");
    let mut ws = open(&c, t["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    type_in(&mut ws, "echo agent-$((2*21)); tty\r").await;
    let (screen, _) = read_until(&mut ws, "/dev/pts/").await;
    assert!(screen.contains("agent-42"), "{screen:?}");
    type_in(&mut ws, "exit\r").await;
    read_event(&mut ws, "exit").await;

    let (_, task) = c
        .send(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"name": "agent-task", "command": "echo \"via $0\"; sleep 30 & wait", "server_ids": [id], "timeout_secs": 1,
                "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}})),
        )
        .await;
    let run = run_now(&c, task["id"].as_str().unwrap()).await;
    assert_eq!(
        (run["state"].as_str(), run["via"].as_str()),
        (Some("timed_out"), Some("agent")),
        "{run}"
    );
    let (_, quick) = c
        .send(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"name": "agent-quick", "command": "printf '%s' \"$(echo it\\'s)\"", "server_ids": [id],
                "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}})),
        )
        .await;
    let run = run_now(&c, quick["id"].as_str().unwrap()).await;
    assert_eq!(
        (run["state"].as_str(), run["stdout"].as_str()),
        (Some("succeeded"), Some("it's")),
        "{run}"
    );
    let audits = eventually(Duration::from_secs(10), || async {
        let a = terminal_audits(&c).await;
        (a.len() == 1).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(audits[0]["via"], "agent");
}

#[tokio::test]
async fn the_console_page_shows_a_typed_command_in_headless_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let assets = std::env::var("MAAS_CONSOLE_ASSETS_DIR")
        .map_or_else(|_| root.join("web/vendor/xterm"), std::path::PathBuf::from);
    let playwright =
        std::env::var("MAAS_PLAYWRIGHT_DIR").unwrap_or_else(|_| "/tmp/maas-ci-browser".into());
    assert!(
        assets.join("xterm.js").exists()
            && std::path::Path::new(&playwright)
                .join("node_modules/playwright-core")
                .exists(),
        "run scripts/fetch-console-assets.sh and `npm install --prefix {playwright} playwright-core` (scripts/test.sh does)"
    );
    let sshd = Sshd::start().await;
    let c = Cluster::start(
        &[(
            "MAAS__COMPUTE__CONSOLE_ASSETS_DIR",
            &assets.display().to_string(),
        )],
        0,
    )
    .await;
    let id = ssh_server(&c, &sshd, "ssh-page", json!({"password": PASSWORD})).await;
    let page = reqwest::get(format!("{}/console/servers/{id}/terminal", c.base))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let shot = c.dir.0.join("terminal.png");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/terminal.cjs"))
        .arg(format!("{}/console/servers/{id}/terminal", c.base))
        .arg(&c.admin)
        .arg("echo page-$((6*7))")
        .arg("page-42")
        .arg(&shot)
        .env(
            "NODE_PATH",
            std::path::Path::new(&playwright).join("node_modules"),
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the page never showed the output: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        shown["text"].as_str().unwrap().contains("page-42"),
        "{shown}"
    );
    assert_eq!(shown["status"].as_str().unwrap(), "connected (ssh)");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "no screenshot"
    );
}

#[tokio::test]
async fn a_run_whose_worker_is_killed_is_marked_lost_and_never_runs_twice() {
    let sshd = Sshd::start().await;
    let mut c = Cluster::start(&[], 1).await;
    let id = ssh_server(&c, &sshd, "ssh-kill", json!({"password": PASSWORD})).await;
    let scratch = sshd.scratch();
    let count = scratch.join("count");
    let (status, task) = c
        .send(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"name": "once", "command": format!("echo ran >> {}; sleep 3", count.display()),
                "server_ids": [id], "timeout_secs": 2, "schedule": {"kind": "once", "at": "2100-01-01T00:00:00Z"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task = task["id"].as_str().unwrap().to_owned();
    let (_, queued) = c
        .send(reqwest::Method::POST, &format!("/tasks/{task}/run"), None)
        .await;
    let run = queued["runs"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/tasks/{task}/runs/{run}");
    let running = eventually(WAIT, || async {
        (c.get(&path).await["state"] == "running" && count.exists()).then_some(())
    })
    .await;
    assert!(
        running.is_some(),
        "the run never started: {}",
        c.get(&path).await
    );
    kill9(&mut c.workers[0]);
    let worker = c.spawn_worker();
    c.workers.push(worker);

    // The new worker's tick sees it running well past its timeout: lost, with the reason.
    let r = eventually(WAIT, || async {
        let r = c.get(&path).await;
        (r["state"] != "running").then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("the run stayed running; logs:\n{}", c.logs()));
    assert_eq!(r["state"], "lost", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("never runs twice"),
        "{r}"
    );
    // Delivery is at least once: the killed worker's job comes back (apalis re-enqueues it
    // after its orphan timeout; pushed here at once). The run is not started again.
    c.app
        .producer::<maas_model::jobs::RemoteTaskJob>()
        .await
        .push(maas_model::jobs::RemoteTaskJob {
            run_id: run.parse().unwrap(),
        })
        .await
        .unwrap();
    let redelivered = eventually(WAIT, || async {
        c.logs()
            .lines()
            .any(|l| l.contains(&run) && l.contains("remote task run ended"))
            .then_some(())
    })
    .await;
    assert!(
        redelivered.is_some(),
        "the killed worker's job was never redelivered"
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "ran\n",
        "the command ran twice"
    );
    assert_eq!(c.get(&path).await["state"], "lost");
}

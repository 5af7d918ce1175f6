//! Shared by the loopback TCP tests: a fake state, a server on an ephemeral port, a GLI client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code
#![allow(dead_code)] // each test file uses a different part

use ivrstate_model::{
    AgentStatus, Availability, ClientRequest, ConfigOption, ConfigValue, IvrConfig, IvrName,
    PortNum, TServerName,
};
use ivrstate_publisher::frame::{encode_frame, Frame, FrameDecoder, FrameKind};
use ivrstate_publisher::xml::{self, GctiMsg, LoginStatus, Message};
use ivrstate_publisher::{serve_tls, Change, Hub, HubConfig, MonitorInfo, StateView, TlsConfig};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Fake {
    pub ivrs: Vec<IvrConfig>,
    pub agents: HashMap<(String, String), AgentStatus>,
}

impl Fake {
    pub fn two_ivrs() -> Self {
        let ivr = |n: &str, ts: &str, options| IvrConfig {
            name: IvrName::from(n),
            tservers: vec![TServerName::from(ts)],
            options,
        };
        let mut agents = HashMap::new();
        agents.insert(("IVR_1".into(), "01".into()), AgentStatus::Ready);
        agents.insert(("IVR_2".into(), "01".into()), AgentStatus::LoggedOut);
        Fake {
            ivrs: vec![
                ivr(
                    "IVR_1",
                    "TS_1",
                    vec![ConfigOption {
                        name: "Timeout".into(),
                        value: ConfigValue::Str("30".into()),
                    }],
                ),
                ivr("IVR_2", "TS_2", vec![]),
            ],
            agents,
        }
    }
}

impl StateView for Fake {
    fn ivr(&self, name: &IvrName) -> Option<&IvrConfig> {
        self.ivrs.iter().find(|i| &i.name == name)
    }
    fn agent_query(&self, ivr: &IvrName, port: &PortNum) -> Option<AgentStatus> {
        self.agents
            .get(&(ivr.to_string(), port.to_string()))
            .copied()
    }
    fn server_statuses_for(&self, ivr: &IvrName) -> Vec<MonitorInfo> {
        self.ivr(ivr)
            .map(|c| {
                c.tservers
                    .iter()
                    .map(|t| MonitorInfo::Server {
                        name: t.clone(),
                        status: Availability::Ok,
                        switch: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    fn server_version(&self) -> Option<&str> {
        Some("8.5.000.01")
    }
}

pub struct Server<S = Fake> {
    pub hub: Arc<Hub<S>>,
    pub addr: SocketAddr,
    pub requests: mpsc::Receiver<ClientRequest>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

pub async fn start(cfg: HubConfig, ready: bool) -> Server {
    start_with(cfg, ready, Fake::two_ivrs(), None).await
}

/// A server over `state`, speaking TLS when `tls` is given.
pub async fn start_with<S>(
    cfg: HubConfig,
    ready: bool,
    state: S,
    tls: Option<TlsConfig>,
) -> Server<S>
where
    S: StateView + Send + Sync + 'static,
{
    let hub = Hub::with_state(cfg, state);
    hub.set_ready(ready);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::channel(1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_tls(listener, hub.clone(), tx, tls, async {
        let _ = stopped.await;
    }));
    Server {
        hub,
        addr,
        requests,
        stop: Some(stop),
        task,
    }
}

pub struct Client<IO = TcpStream> {
    pub s: IO,
    pub d: FrameDecoder,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).await.unwrap())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    pub fn over(s: IO) -> Client<IO> {
        Client {
            s,
            d: FrameDecoder::new(),
        }
    }

    pub async fn send(&mut self, call_id: &str, msg: Message) {
        let doc = xml::encode(&GctiMsg {
            call_id: call_id.into(),
            msg,
        });
        self.s
            .write_all(&encode_frame(FrameKind::Data, &doc).unwrap())
            .await
            .unwrap();
    }

    pub async fn login(&mut self, call_id: &str, name: &str, monitor: bool) -> GctiMsg {
        self.send(
            call_id,
            Message::LoginReq {
                version: "4.0".into(),
                client_name: name.into(),
                report_status: None,
                server_monitor: monitor,
            },
        )
        .await;
        let resp = self.msg().await;
        // A 4.0 client's LoginResp OK or InitInProgress is followed by FlowControl Off.
        if matches!(
            status_of(&resp),
            Some(LoginStatus::Ok | LoginStatus::InitInProgress)
        ) {
            let flow = self.msg().await;
            assert_eq!(
                flow,
                GctiMsg {
                    call_id: call_id.into(),
                    msg: Message::FlowControl {
                        status: Some("Off".into())
                    }
                }
            );
        }
        resp
    }

    /// The next frame, or None at EOF.
    pub async fn next(&mut self) -> Option<Frame> {
        timeout(DEADLINE, async {
            loop {
                if let Some(f) = self.d.next_frame() {
                    return Some(f.unwrap());
                }
                let mut buf = [0u8; 4096];
                match self.s.read(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.d.push(&buf[..n]),
                }
            }
        })
        .await
        .expect("no frame before the deadline")
    }

    pub async fn msg(&mut self) -> GctiMsg {
        let f = self.next().await.expect("connection closed");
        assert_eq!(f.kind, FrameKind::Data);
        xml::decode(&f.body).unwrap()
    }

    /// Whether the server closes the connection (after any frames) before the deadline.
    pub async fn closed(&mut self) -> bool {
        while self.next().await.is_some() {}
        true
    }
}

pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    timeout(DEADLINE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

pub fn status_of(m: &GctiMsg) -> Option<LoginStatus> {
    match &m.msg {
        Message::LoginResp { status, .. } => *status,
        other => panic!("not a LoginResp: {other:?}"),
    }
}

pub fn agent(ivr: &str, port: &str, status: AgentStatus) -> Change {
    Change {
        ivr: IvrName::from(ivr),
        info: MonitorInfo::Agent {
            port: PortNum::from(port),
            status,
        },
    }
}

pub async fn with_deadline<T>(f: impl Future<Output = T>) -> T {
    timeout(DEADLINE, f).await.expect("deadline")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    /// A keep-alive round trip: every push queued for this client before it is read first.
    pub async fn sync(&mut self) -> Vec<Frame> {
        self.s
            .write_all(&encode_frame(FrameKind::KeepAliveRequest, b"").unwrap())
            .await
            .unwrap();
        let mut before = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .expect("closed before the keep-alive answer");
            if f.kind == FrameKind::KeepAliveResponse {
                return before;
            }
            before.push(f);
        }
    }
}

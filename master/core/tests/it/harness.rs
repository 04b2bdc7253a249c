//! A test harness for the master core: a virtual clock, simulated agents and
//! frameworks, and a record of every output (like Nomad's scheduler Harness).

use std::time::Duration;

use agora_master_core::ids::{AgentId, ConnId, FrameworkId, RequestId, StreamId};
use agora_master_core::{CallError, Config, Input, Master, Output, Time};
use agora_proto::internal::{AgentMessage, Register, StatusUpdate, agent_message, master_message};
use agora_proto::resources::{Resources, parse_attributes};
use agora_proto::{json, scheduler as sched, v1};

/// A subscribed framework.
#[derive(Clone, Debug)]
pub struct Fw {
    pub id: FrameworkId,
    pub stream: StreamId,
}

/// A registered simulated agent.
#[derive(Clone, Debug)]
pub struct Ag {
    pub id: AgentId,
    pub conn: ConnId,
}

pub struct Harness {
    pub master: Master,
    pub now: Time,
    next: u64,
    /// Every output so far, in order.
    pub log: Vec<Output>,
    /// Simulated agents answer pings (off: they stay silent).
    pub auto_pong: bool,
    /// Who scheduler calls are authenticated as (None: an open realm).
    pub principal: Option<String>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let now = Time::from_secs(1_700_000_000);
        let info = v1::MasterInfo {
            id: "M".into(),
            ip: 16777343,
            port: 5050,
            hostname: Some("master".into()),
            version: Some("1.11.0".into()),
            ..Default::default()
        };
        Harness {
            master: Master::new(config, info, 1, 42, now),
            now,
            next: 0,
            log: Vec::new(),
            auto_pong: false,
            principal: None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = self.master.handle(self.now, input);
        self.log.extend(out.iter().cloned());
        if self.auto_pong {
            let pinged: Vec<ConnId> = out
                .iter()
                .filter_map(|o| match o {
                    Output::ToAgent { conn, message }
                        if matches!(message.message, Some(master_message::Message::Ping(_))) =>
                    {
                        Some(*conn)
                    }
                    _ => None,
                })
                .collect();
            for conn in pinged {
                let pong = AgentMessage {
                    message: Some(agent_message::Message::Pong(agora_proto::internal::Pong {
                        sequence: None,
                    })),
                };
                let more = self.master.handle(
                    self.now,
                    Input::Agent {
                        conn,
                        message: pong,
                    },
                );
                self.log.extend(more.iter().cloned());
                out.extend(more);
            }
        }
        out
    }

    /// Advances the virtual clock and fires due timers.
    pub fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now = self.now + d;
        self.handle(Input::Tick)
    }

    /// Fires due timers without moving the clock (event-driven allocation).
    pub fn tick(&mut self) -> Vec<Output> {
        self.handle(Input::Tick)
    }

    pub fn register_agent(&mut self, hostname: &str, resources: &str) -> Ag {
        self.register_agent_with(hostname, resources, "", None)
    }

    pub fn register_agent_with(
        &mut self,
        hostname: &str,
        resources: &str,
        attributes: &str,
        id: Option<&AgentId>,
    ) -> Ag {
        let resources = Resources::parse(resources, "*").unwrap().to_protos();
        self.register(hostname, resources, attributes, id)
    }

    /// An agent (re-)registering with resources as protobufs (with
    /// reservations and volumes, as an agent checkpointed them).
    pub fn register_agent_with_resources(
        &mut self,
        hostname: &str,
        resources: Vec<v1::Resource>,
        id: Option<&AgentId>,
    ) -> Ag {
        self.register(hostname, resources, "", id)
    }

    fn register(
        &mut self,
        hostname: &str,
        resources: Vec<v1::Resource>,
        attributes: &str,
        id: Option<&AgentId>,
    ) -> Ag {
        let conn = ConnId(self.id());
        let info = v1::AgentInfo {
            hostname: hostname.into(),
            port: Some(5051),
            resources,
            attributes: parse_attributes(attributes).unwrap(),
            id: id.map(AgentId::to_proto),
            domain: None,
        };
        let out = self.handle(Input::Agent {
            conn,
            message: AgentMessage {
                message: Some(agent_message::Message::Register(Register {
                    agent_info: info,
                    address: format!("127.0.0.1:{}", 5000 + conn.0),
                    version: None,
                    tasks: vec![],
                    executors: vec![],
                    frameworks: vec![],
                    epoch: None,
                })),
            },
        });
        let id = agent_messages(&out, conn)
            .into_iter()
            .find_map(|m| match m {
                master_message::Message::Registered(r) => Some(AgentId::from(&r.agent_id)),
                _ => None,
            })
            .expect("agent registered");
        Ag { id, conn }
    }

    /// SUBSCRIBE with a FrameworkInfo given as JSON.
    pub fn subscribe(&mut self, framework_info: &str) -> (Fw, Vec<Output>) {
        let stream = StreamId(format!("stream-{}", self.id()));
        let call: sched::Call = json::from_slice(
            format!(r#"{{"type":"SUBSCRIBE","subscribe":{{"framework_info":{framework_info}}}}}"#)
                .as_bytes(),
        )
        .unwrap();
        let request = RequestId(self.id());
        let out = self.handle(Input::Subscribe {
            request,
            stream: stream.clone(),
            call,
            principal: self.principal.clone(),
        });
        let id = events(&out, &stream)
            .into_iter()
            .find_map(|e| e.subscribed.map(|s| FrameworkId::from(&s.framework_id)))
            .unwrap_or_else(|| FrameworkId::new(""));
        (Fw { id, stream }, out)
    }

    /// Subscribes a plain framework named `name` (role `*`).
    pub fn framework(&mut self, name: &str) -> Fw {
        self.subscribe(&format!(
            r#"{{"user":"root","name":"{name}","failover_timeout":60}}"#
        ))
        .0
    }

    /// Sends a scheduler call given as JSON (its `framework_id` is filled in).
    pub fn call(&mut self, fw: &Fw, call: &str) -> (Result<(), CallError>, Vec<Output>) {
        let mut call: sched::Call = json::from_slice(call.as_bytes()).unwrap();
        call.framework_id = Some(fw.id.to_proto());
        self.call_raw(Some(fw.stream.clone()), call)
    }

    pub fn call_raw(
        &mut self,
        stream: Option<StreamId>,
        call: sched::Call,
    ) -> (Result<(), CallError>, Vec<Output>) {
        let request = RequestId(self.id());
        let out = self.handle(Input::Call {
            request,
            stream,
            call,
            principal: self.principal.clone(),
        });
        let result = out
            .iter()
            .find_map(|o| match o {
                Output::Reply { request: r, result } if *r == request => Some(result.clone()),
                _ => None,
            })
            .expect("every call is answered");
        (result, out)
    }

    /// Runs an allocation and returns the offers `fw` received.
    pub fn offers_for(&mut self, fw: &Fw) -> Vec<v1::Offer> {
        let out = self.tick();
        offers(&out, &fw.stream)
    }

    /// Launches one command task on an offer.
    pub fn launch(
        &mut self,
        fw: &Fw,
        offer: &v1::Offer,
        task_id: &str,
        resources: &str,
        command: &str,
    ) -> Vec<Output> {
        let task = task_json(task_id, &offer.agent_id.value, resources, command);
        let call = format!(
            r#"{{"type":"ACCEPT","accept":{{"offer_ids":[{{"value":"{}"}}],"operations":[{{"type":"LAUNCH","launch":{{"task_infos":[{task}]}}}}],"filters":{{"refuse_seconds":0}}}}}}"#,
            offer.id.value
        );
        let (r, out) = self.call(fw, &call);
        r.unwrap();
        out
    }

    /// The agent reports a status update for a task.
    pub fn agent_update(
        &mut self,
        ag: &Ag,
        fw: &Fw,
        task_id: &str,
        state: v1::TaskState,
        uuid: u8,
    ) -> Vec<Output> {
        let status = v1::TaskStatus {
            task_id: v1::TaskId {
                value: task_id.into(),
            },
            state: state as i32,
            source: Some(v1::task_status::Source::Executor as i32),
            uuid: Some(vec![uuid; 16]),
            executor_id: Some(v1::ExecutorId {
                value: task_id.into(),
            }),
            ..Default::default()
        };
        self.handle(Input::Agent {
            conn: ag.conn,
            message: AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                    framework_id: fw.id.to_proto(),
                    status,
                    latest_state: Some(state as i32),
                })),
            },
        })
    }

    pub fn ack(&mut self, fw: &Fw, ag: &Ag, task_id: &str, uuid: u8) -> Result<(), CallError> {
        let call = format!(
            r#"{{"type":"ACKNOWLEDGE","acknowledge":{{"agent_id":{{"value":"{}"}},"task_id":{{"value":"{task_id}"}},"uuid":"{}"}}}}"#,
            ag.id,
            base64_16(uuid)
        );
        self.call(fw, &call).0
    }
}

pub fn base64_16(b: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([b; 16])
}

pub fn task_json(task_id: &str, agent: &str, resources: &str, command: &str) -> String {
    let res: Vec<String> = Resources::parse(resources, "*")
        .unwrap()
        .to_protos()
        .iter()
        .map(json::to_string)
        .collect();
    format!(
        r#"{{"name":"{task_id}","task_id":{{"value":"{task_id}"}},"agent_id":{{"value":"{agent}"}},"resources":[{}],"command":{{"value":"{command}"}}}}"#,
        res.join(",")
    )
}

/// The events sent on `stream` among `out`.
pub fn events(out: &[Output], stream: &StreamId) -> Vec<sched::Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event { stream: s, event } if s == stream => Some((**event).clone()),
            _ => None,
        })
        .collect()
}

pub fn event_types(out: &[Output], stream: &StreamId) -> Vec<sched::event::Type> {
    events(out, stream).iter().map(|e| e.r#type()).collect()
}

pub fn offers(out: &[Output], stream: &StreamId) -> Vec<v1::Offer> {
    events(out, stream)
        .into_iter()
        .filter_map(|e| e.offers)
        .flat_map(|o| o.offers)
        .collect()
}

pub fn updates(out: &[Output], stream: &StreamId) -> Vec<v1::TaskStatus> {
    events(out, stream)
        .into_iter()
        .filter_map(|e| e.update)
        .map(|u| u.status)
        .collect()
}

pub fn agent_messages(out: &[Output], conn: ConnId) -> Vec<master_message::Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToAgent { conn: c, message } if *c == conn => message.message.clone(),
            _ => None,
        })
        .collect()
}

pub fn closed(out: &[Output], stream: &StreamId) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::CloseStream { stream: s } if s == stream))
}

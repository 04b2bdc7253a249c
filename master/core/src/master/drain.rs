//! Draining an agent for maintenance (Mesos 1.9's DRAIN_AGENT), with a
//! notice for frameworks that move their own tasks.
//!
//! The agent is deactivated (no offers) and each framework with tasks on it
//! gets an inverse offer for the agent (unavailability from now). A framework
//! that accepts it moves its tasks itself (marathon-rs starts replacements
//! elsewhere and kills the old copies as its upgrade strategy allows) until
//! the drain's deadline (`--drain-notice` after the call); the tasks of a
//! framework that declines, or has not answered within [`DRAIN_ANSWER`],
//! are killed at once, as Mesos does. Kills wait at most `max_grace_period`
//! and end as TASK_KILLED with REASON_AGENT_DRAINING; once no task is left
//! the agent is DRAINED, and marked gone if the operator asked.
//! REACTIVATE_AGENT ends a drain and rescinds its inverse offers. With a
//! notice of 0 no inverse offer is sent and every task is killed at once
//! (Mesos' semantics exactly).

use std::collections::BTreeSet;
use std::time::Duration;

use agora_proto::internal::{KillTask, master_message};
use agora_proto::scheduler as sched;
use agora_proto::v1::{self, task_status::Reason};

use super::{CallError, Master};
use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::time::Time;

/// How long a framework has to accept a drain's inverse offer before its
/// tasks are killed at once. A framework that handles inverse offers
/// answers as it reads them; one that ignores them (most Mesos frameworks)
/// is not kept waiting for the whole notice.
pub const DRAIN_ANSWER: Duration = Duration::from_secs(2);

/// A drain under way (or done) on an agent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Drain {
    pub config: v1::DrainConfig,
    /// No task is left.
    pub drained: bool,
    /// Until then a framework may still accept the inverse offer (None:
    /// passed).
    pub answer_by: Option<Time>,
    /// Tasks still there then are killed.
    pub deadline: Time,
    /// Frameworks whose tasks were told to end.
    pub killed: BTreeSet<FrameworkId>,
}

impl Drain {
    /// As GET_AGENTS shows it.
    pub(crate) fn info(&self) -> v1::DrainInfo {
        v1::DrainInfo {
            state: if self.drained {
                v1::DrainState::Drained
            } else {
                v1::DrainState::Draining
            } as i32,
            config: self.config,
        }
    }

    fn policy(&self) -> Option<v1::KillPolicy> {
        self.config.max_grace_period.map(|g| v1::KillPolicy {
            grace_period: Some(g),
        })
    }

    /// When the drain must next act (None: nothing left to decide).
    fn due(&self) -> Option<Time> {
        if self.drained {
            return None;
        }
        Some(
            self.answer_by
                .map_or(self.deadline, |a| a.min(self.deadline)),
        )
    }
}

/// An inverse offer: a framework is asked to leave an agent.
#[derive(Clone, Debug)]
pub(crate) struct InverseOffer {
    pub id: OfferId,
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub unavailability: v1::Unavailability,
    /// When it was sent.
    pub sent: Time,
    /// ACCEPT or DECLINE, and when.
    pub answer: Option<(v1::allocator::inverse_offer_status::Status, Time)>,
}

impl InverseOffer {
    fn to_proto(&self) -> v1::InverseOffer {
        v1::InverseOffer {
            id: self.id.to_proto(),
            url: None,
            framework_id: self.framework.to_proto(),
            agent_id: Some(self.agent.to_proto()),
            unavailability: self.unavailability,
            resources: Vec::new(),
        }
    }

    fn accepted(&self) -> bool {
        self.answer
            .is_some_and(|(s, _)| s == v1::allocator::inverse_offer_status::Status::Accept)
    }

    fn declined(&self) -> bool {
        self.answer
            .is_some_and(|(s, _)| s == v1::allocator::inverse_offer_status::Status::Decline)
    }
}

fn unavailable_from(now: Time) -> v1::Unavailability {
    v1::Unavailability {
        start: v1::TimeInfo {
            nanoseconds: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
        },
        duration: None,
    }
}

impl Master {
    /// DRAIN_AGENT.
    pub(crate) fn drain_agent(
        &mut self,
        now: Time,
        id: &AgentId,
        max_grace: Option<Duration>,
        mark_gone: bool,
    ) -> Result<(), CallError> {
        let notice = self.config.drain_notice;
        let a = self
            .agents
            .get_mut(id)
            .ok_or_else(|| CallError::NotFound(format!("Agent {id} not found")))?;
        let max_grace_period = max_grace.map(|g| v1::DurationInfo {
            nanoseconds: i64::try_from(g.as_nanos()).unwrap_or(i64::MAX),
        });
        a.deactivated = true;
        a.drain = Some(Drain {
            config: v1::DrainConfig {
                max_grace_period,
                mark_gone: Some(mark_gone),
            },
            drained: false,
            answer_by: (!notice.is_zero()).then(|| now + DRAIN_ANSWER.min(notice)),
            deadline: now + notice,
            killed: BTreeSet::new(),
        });
        let offers: Vec<OfferId> = a.offers.iter().cloned().collect();
        self.allocator.deactivate_agent(id);
        for o in offers {
            self.rescind_offer(now, &o, None);
        }
        self.registry_dirty = true;
        self.emit_agent_added(id);
        self.drain_step(now, id);
        Ok(())
    }

    /// Decides, for each framework with tasks on a draining agent, whether
    /// its tasks are killed now (it declined, did not answer in time, or
    /// the deadline passed) or it keeps moving them; frameworks not yet
    /// asked get their inverse offer.
    fn drain_step(&mut self, now: Time, id: &AgentId) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Some(drain) = a.drain.as_mut().filter(|d| !d.drained) else {
            return;
        };
        if drain.answer_by.is_some_and(|t| t <= now) {
            drain.answer_by = None;
        }
        let (answering, past_deadline) = (drain.answer_by.is_some(), drain.deadline <= now);
        let present: BTreeSet<FrameworkId> = a.tasks.iter().map(|(f, _)| f.clone()).collect();
        let waiting: Vec<FrameworkId> = present.difference(&drain.killed).cloned().collect();
        let policy = drain.policy();
        for framework in waiting {
            let offer = self
                .inverse_offers
                .values()
                .find(|o| o.framework == framework && &o.agent == id);
            let kill = past_deadline
                || offer.is_some_and(InverseOffer::declined)
                || (!answering && !offer.is_some_and(InverseOffer::accepted));
            if kill {
                self.kill_for_drain(id, &framework, policy);
                if let Some(d) = self.agents.get_mut(id).and_then(|a| a.drain.as_mut()) {
                    d.killed.insert(framework);
                }
            } else if offer.is_none() {
                self.send_inverse_offer(now, id, &framework, unavailable_from(now));
            }
        }
        self.check_drained(now, id);
    }

    /// Asks `framework` to leave `agent` (a drain, or a maintenance
    /// window's `unavailability`).
    pub(crate) fn send_inverse_offer(
        &mut self,
        now: Time,
        agent: &AgentId,
        framework: &FrameworkId,
        unavailability: v1::Unavailability,
    ) {
        self.next_offer += 1;
        let offer = InverseOffer {
            id: OfferId::new(format!("{}-O{}", self.info.id, self.next_offer)),
            framework: framework.clone(),
            agent: agent.clone(),
            unavailability,
            sent: now,
            answer: None,
        };
        self.send(framework, inverse_offers_event(vec![offer.to_proto()]));
        self.inverse_offers.insert(offer.id.clone(), offer);
    }

    /// The drains' timers.
    pub(crate) fn drain_deadline(&self) -> Option<Time> {
        self.agents
            .values()
            .filter_map(|a| a.drain.as_ref()?.due())
            .min()
    }

    /// Acts on the drains whose time came.
    pub(crate) fn drain_tick(&mut self, now: Time) {
        let due: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                a.drain
                    .as_ref()
                    .and_then(Drain::due)
                    .is_some_and(|t| t <= now)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            self.drain_step(now, &id);
        }
    }

    /// ACCEPT_INVERSE_OFFERS / DECLINE_INVERSE_OFFERS from `framework`.
    /// Ids that are not its outstanding inverse offers are ignored, as Mesos
    /// does.
    pub(crate) fn answer_inverse_offers(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        ids: &[v1::OfferId],
        accept: bool,
    ) {
        use v1::allocator::inverse_offer_status::Status;
        let status = if accept {
            Status::Accept
        } else {
            Status::Decline
        };
        let mut agents = BTreeSet::new();
        for id in ids {
            if let Some(o) = self
                .inverse_offers
                .get_mut(&OfferId::from(id))
                .filter(|o| &o.framework == framework)
            {
                o.answer = Some((status, now));
                agents.insert(o.agent.clone());
            }
        }
        for agent in agents {
            self.drain_step(now, &agent);
        }
    }

    /// A framework subscribed again: its outstanding inverse offers are
    /// sent to its new stream (its answers so far stand).
    pub(crate) fn resend_inverse_offers(&mut self, framework: &FrameworkId) {
        let offers: Vec<v1::InverseOffer> = self
            .inverse_offers
            .values()
            .filter(|o| &o.framework == framework)
            .map(InverseOffer::to_proto)
            .collect();
        if !offers.is_empty() {
            self.send(framework, inverse_offers_event(offers));
        }
    }

    /// Withdraws the inverse offers for `agent` (its drain ended or it is
    /// gone), telling their frameworks.
    pub(crate) fn rescind_inverse_offers(&mut self, agent: &AgentId) {
        let ids: Vec<OfferId> = self
            .inverse_offers
            .values()
            .filter(|o| &o.agent == agent)
            .map(|o| o.id.clone())
            .collect();
        for id in ids {
            let o = self.inverse_offers.remove(&id).expect("listed above");
            self.send(
                &o.framework,
                sched::Event {
                    r#type: Some(sched::event::Type::RescindInverseOffer as i32),
                    rescind_inverse_offer: Some(sched::event::RescindInverseOffer {
                        inverse_offer_id: id.to_proto(),
                    }),
                    ..Default::default()
                },
            );
        }
    }

    /// A framework is gone: its inverse offers go with it.
    pub(crate) fn forget_inverse_offers(&mut self, framework: &FrameworkId) {
        self.inverse_offers.retain(|_, o| &o.framework != framework);
    }

    /// A task's update from a draining agent: a kill the drain sent ended
    /// it (REASON_AGENT_DRAINING); one its framework sent while moving it
    /// keeps its own reason.
    pub(crate) fn drain_reason(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        status: &mut v1::TaskStatus,
    ) {
        let by_drain = |d: &Drain| d.killed.contains(framework);
        if status.state() == v1::TaskState::TaskKilled
            && self
                .agents
                .get(agent)
                .and_then(|a| a.drain.as_ref())
                .is_some_and(by_drain)
        {
            status.reason = Some(Reason::AgentDraining as i32);
        }
    }

    /// A draining agent came back (after a master failover or its own
    /// restart): the kills it was sent are sent again (they may have been
    /// lost), and the drain goes on.
    pub(crate) fn drain_resume(&mut self, now: Time, id: &AgentId) {
        let Some(drain) = self
            .agents
            .get(id)
            .and_then(|a| a.drain.as_ref())
            .filter(|d| !d.drained)
        else {
            return;
        };
        let policy = drain.policy();
        for framework in drain.killed.clone() {
            self.kill_for_drain(id, &framework, policy);
        }
        self.drain_step(now, id);
    }

    /// Tells the agent to kill each task of `framework` within `policy`
    /// (kills for an agent away wait for it).
    fn kill_for_drain(
        &mut self,
        id: &AgentId,
        framework: &FrameworkId,
        policy: Option<v1::KillPolicy>,
    ) {
        let Some(a) = self.agents.get(id) else {
            return;
        };
        let tasks: Vec<TaskId> = a
            .tasks
            .iter()
            .filter(|(f, _)| f == framework)
            .map(|(_, t)| t.clone())
            .collect();
        for task in tasks {
            let message = master_message::Message::KillTask(KillTask {
                framework_id: framework.to_proto(),
                task_id: task.to_proto(),
                kill_policy: policy,
            });
            if !self.send_to_agent(id, message)
                && let Some(a) = self.agents.get_mut(id)
            {
                a.pending_kills.push((framework.clone(), task, policy));
            }
        }
    }

    /// The drains for the registry.
    pub(crate) fn drains_stored(&self) -> Vec<agora_proto::internal::AgentDrain> {
        self.agents
            .values()
            .filter_map(|a| {
                let d = a.drain.as_ref()?;
                Some(agora_proto::internal::AgentDrain {
                    agent_id: a.id.to_string(),
                    config: d.config,
                    drained: Some(d.drained),
                    deadline_nanos: Some(d.deadline.as_nanos()),
                })
            })
            .collect()
    }

    /// Takes back stored drains: their agents stay deactivated and draining,
    /// with the deadline they had; frameworks have [`DRAIN_ANSWER`] from
    /// now to accept the inverse offers sent when they subscribe again.
    pub(crate) fn recover_drains(
        &mut self,
        now: Time,
        drains: &[agora_proto::internal::AgentDrain],
    ) {
        for d in drains {
            if let Some(a) = self.agents.get_mut(&AgentId::new(d.agent_id.clone())) {
                let deadline = d.deadline_nanos.map_or(now, Time::from_nanos);
                a.deactivated = true;
                a.drain = Some(Drain {
                    config: d.config,
                    drained: d.drained == Some(true),
                    answer_by: (deadline > now).then(|| now + DRAIN_ANSWER),
                    deadline,
                    killed: BTreeSet::new(),
                });
            }
        }
    }

    /// Ends a drain (REACTIVATE_AGENT): its inverse offers are withdrawn.
    pub(crate) fn end_drain(&mut self, id: &AgentId) {
        if self
            .agents
            .get_mut(id)
            .and_then(|a| a.drain.take())
            .is_some()
        {
            self.registry_dirty = true;
        }
        self.rescind_inverse_offers(id);
    }

    /// DRAINED once a draining agent runs no task (then gone, if asked).
    pub(crate) fn check_drained(&mut self, now: Time, id: &AgentId) {
        let Some(a) = self.agents.get_mut(id) else {
            return;
        };
        let Some(drain) = a.drain.as_mut().filter(|d| !d.drained) else {
            return;
        };
        if !a.tasks.is_empty() {
            return;
        }
        drain.drained = true;
        self.registry_dirty = true;
        let gone = drain.config.mark_gone == Some(true);
        self.rescind_inverse_offers(id);
        self.emit_agent_added(id);
        if gone {
            self.mark_gone(now, id);
        }
    }
}

fn inverse_offers_event(offers: Vec<v1::InverseOffer>) -> sched::Event {
    sched::Event {
        r#type: Some(sched::event::Type::InverseOffers as i32),
        inverse_offers: Some(sched::event::InverseOffers {
            inverse_offers: offers,
        }),
        ..Default::default()
    }
}

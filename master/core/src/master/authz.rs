//! Authorization decisions of the master, from its ACLs (`Config::acls`):
//! what a principal may see of the state (filtered, never refused whole, as
//! Mesos' read endpoints), and the messages of refusals. The checks that
//! change state (SUBSCRIBE, LAUNCH, operator calls) call [`Master::allows`]
//! where they happen.

use std::collections::HashMap;

use agora_proto::acl::Action;
use agora_proto::operator::response;
use agora_proto::v1;

use super::Master;
use crate::CallError;

/// What one principal may see: built once per read.
pub struct Viewer<'a> {
    master: &'a Master,
    principal: Option<&'a str>,
    /// Every framework's user (active and completed), by id.
    users: HashMap<&'a str, &'a str>,
}

impl Master {
    /// Whether `principal` may do `action` on `object` (Mesos' local
    /// authorizer over `--acls`).
    pub fn allows(&self, action: Action, principal: Option<&str>, object: Option<&str>) -> bool {
        self.config.acls.allows(action, principal, object)
    }

    /// A 403 naming the action, unless `principal` may do it.
    pub(crate) fn authorize(
        &self,
        action: Action,
        principal: Option<&str>,
        object: Option<&str>,
    ) -> Result<(), CallError> {
        if self.allows(action, principal, object) {
            return Ok(());
        }
        let who = principal.map_or_else(
            || "an unauthenticated caller".to_string(),
            |p| format!("principal '{p}'"),
        );
        let on = object.map_or_else(String::new, |o| format!(" on '{o}'"));
        Err(CallError::Forbidden(format!(
            "403 Forbidden. {who} is not authorized to {}{on}",
            action.key()
        )))
    }

    /// What `principal` may see of the state.
    pub fn viewer<'a>(&'a self, principal: Option<&'a str>) -> Viewer<'a> {
        let users = self
            .frameworks
            .values()
            .chain(self.completed_frameworks.iter())
            .map(|f| (f.id.as_str(), f.info.user.as_str()))
            .collect();
        Viewer {
            master: self,
            principal,
            users,
        }
    }
}

impl Viewer<'_> {
    fn allows(&self, action: Action, user: &str) -> bool {
        self.master.allows(action, self.principal, Some(user))
    }

    fn framework_user(&self, id: Option<&v1::FrameworkId>) -> Option<&str> {
        self.users.get(id?.value.as_str()).copied()
    }

    /// Whether the framework `info` is visible (view_frameworks on its user).
    pub fn framework(&self, info: &v1::FrameworkInfo) -> bool {
        self.allows(Action::ViewFrameworks, &info.user)
    }

    fn framework_visible(&self, id: Option<&v1::FrameworkId>) -> bool {
        self.framework_user(id)
            .is_some_and(|u| self.allows(Action::ViewFrameworks, u))
    }

    /// Whether a task is visible: its framework is, and view_tasks on the
    /// task's user (else its framework's).
    pub fn task(&self, t: &v1::Task) -> bool {
        let Some(fw_user) = self.framework_user(Some(&t.framework_id)) else {
            return false;
        };
        self.allows(Action::ViewFrameworks, fw_user)
            && self.allows(Action::ViewTasks, t.user.as_deref().unwrap_or(fw_user))
    }

    /// Whether an executor is visible: its framework is, and view_executors
    /// on its command's user (else its framework's).
    pub fn executor(&self, e: &v1::ExecutorInfo) -> bool {
        let Some(fw_user) = self.framework_user(e.framework_id.as_ref()) else {
            return false;
        };
        let user = e
            .command
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .unwrap_or(fw_user);
        self.allows(Action::ViewFrameworks, fw_user) && self.allows(Action::ViewExecutors, user)
    }

    /// Whether nothing is filtered (no ACL about viewing, permissive).
    fn sees_everything(&self) -> bool {
        [
            Action::ViewFrameworks,
            Action::ViewTasks,
            Action::ViewExecutors,
        ]
        .iter()
        .all(|a| self.master.config.acls.is_open(*a))
    }

    /// GET_FRAMEWORKS without what may not be seen.
    #[allow(
        deprecated,
        reason = "deprecated fields are still filled and must be filtered too"
    )]
    pub fn frameworks(&self, r: &mut response::GetFrameworks) {
        if self.sees_everything() {
            return;
        }
        r.frameworks.retain(|f| self.framework(&f.framework_info));
        r.completed_frameworks
            .retain(|f| self.framework(&f.framework_info));
        r.recovered_frameworks.retain(|f| self.framework(f));
    }

    /// GET_TASKS without what may not be seen.
    #[allow(
        deprecated,
        reason = "deprecated fields are still filled and must be filtered too"
    )]
    pub fn tasks(&self, r: &mut response::GetTasks) {
        if self.sees_everything() {
            return;
        }
        for list in [
            &mut r.pending_tasks,
            &mut r.tasks,
            &mut r.unreachable_tasks,
            &mut r.completed_tasks,
            &mut r.orphan_tasks,
        ] {
            list.retain(|t| self.task(t));
        }
    }

    /// GET_EXECUTORS without what may not be seen.
    #[allow(
        deprecated,
        reason = "deprecated fields are still filled and must be filtered too"
    )]
    pub fn executors(&self, r: &mut response::GetExecutors) {
        if self.sees_everything() {
            return;
        }
        r.executors.retain(|e| self.executor(&e.executor_info));
        r.orphan_executors
            .retain(|e| self.executor(&e.executor_info));
    }

    /// GET_STATE without what may not be seen.
    pub fn state(&self, r: &mut response::GetState) {
        if let Some(f) = &mut r.get_frameworks {
            self.frameworks(f);
        }
        if let Some(t) = &mut r.get_tasks {
            self.tasks(t);
        }
        if let Some(e) = &mut r.get_executors {
            self.executors(e);
        }
    }

    /// Whether a framework, by id, may be seen (for events).
    pub fn framework_id(&self, id: &v1::FrameworkId) -> bool {
        self.framework_visible(Some(id))
    }

    /// Whether the operator API SUBSCRIBE stream may carry `e` to this
    /// principal: events about frameworks and tasks it may not see are left
    /// out (agents are for everyone), as Mesos filters its event stream.
    pub fn operator_event(&self, e: &agora_proto::operator::Event) -> bool {
        if self.sees_everything() {
            return true;
        }
        if let Some(t) = &e.task_added {
            return self.task(&t.task);
        }
        if let Some(u) = &e.task_updated {
            let task = crate::ids::FrameworkId::from(&u.framework_id);
            let id = crate::ids::TaskId::from(&u.status.task_id);
            let found = self.master.frameworks.get(&task).and_then(|f| {
                f.tasks
                    .get(&id)
                    .or_else(|| f.unreachable_tasks.get(&id))
                    .or_else(|| {
                        f.completed_tasks
                            .iter()
                            .find(|t| t.proto.task_id == u.status.task_id)
                    })
            });
            return match found {
                Some(t) => self.task(&t.proto),
                None => self.framework_visible(Some(&u.framework_id)),
            };
        }
        if let Some(f) = &e.framework_added {
            return self.framework(&f.framework.framework_info);
        }
        if let Some(f) = &e.framework_updated {
            return self.framework(&f.framework.framework_info);
        }
        if let Some(f) = &e.framework_removed {
            return self.framework(&f.framework_info);
        }
        true
    }
}

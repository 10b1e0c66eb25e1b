//! Edited notification templates: the one piece of notification state the
//! engine keeps. In-app notifications are derived outside the engine
//! (`persister::notify`) from built-in templates; `Command::
//! SetNotificationTemplate` journals an admin's new text for one of them, so
//! that every renderer (the gateway's read model, the persister's rows, a
//! replay) uses the same text for every record after the edit's sequence
//! number.
//!
//! The engine does not know which templates exist nor which placeholders
//! each supports (the catalogue lives with the derivation; the gateway
//! checks both before journaling). It checks the bounds (name shape,
//! lengths, no control characters, at most `NOTIFY_TEMPLATES_MAX` names),
//! that the actor is an active registered user, and keeps the newest text
//! per name with a version counted from 1 (snapshot and `state_hash()`
//! included).

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::event::Event;
use crate::reject::RejectReason;
use crate::types::UserId;

/// Longest template name, in bytes (`notification_templates.name`).
pub const NOTIFY_TEMPLATE_NAME_MAX_LEN: usize = 100;
/// Longest subject (title), in bytes (`notification_templates.subject`
/// is VARCHAR(255); bytes bound characters).
pub const NOTIFY_TEMPLATE_SUBJECT_MAX_LEN: usize = 255;
/// Longest content (body), in bytes.
pub const NOTIFY_TEMPLATE_CONTENT_MAX_LEN: usize = 2000;
/// Most distinct template names the engine keeps edits for.
pub const NOTIFY_TEMPLATES_MAX: usize = 64;

/// The newest edit of one notification template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationTemplate {
    pub name: String,
    /// The title.
    pub subject: String,
    /// The body.
    pub content: String,
    /// An inactive template produces no notifications.
    pub active: bool,
    /// 1 for the first edit, +1 for each later one.
    pub version: u64,
    pub updated_by: UserId,
    /// Journal time of the edit (ms).
    pub updated_ms: u64,
}

/// A template name: 1..=`NOTIFY_TEMPLATE_NAME_MAX_LEN` of `[a-z0-9_]`.
pub fn valid_template_name(name: &str) -> bool {
    (1..=NOTIFY_TEMPLATE_NAME_MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The engine's check of a template's text: a subject of
/// 1..=`NOTIFY_TEMPLATE_SUBJECT_MAX_LEN` bytes without control characters,
/// content of 1..=`NOTIFY_TEMPLATE_CONTENT_MAX_LEN` bytes without control
/// characters other than newlines, neither blank.
pub fn valid_template_text(subject: &str, content: &str) -> bool {
    (1..=NOTIFY_TEMPLATE_SUBJECT_MAX_LEN).contains(&subject.len())
        && (1..=NOTIFY_TEMPLATE_CONTENT_MAX_LEN).contains(&content.len())
        && !subject.trim().is_empty()
        && !content.trim().is_empty()
        && !subject.chars().any(char::is_control)
        && !content.chars().any(|c| c.is_control() && c != '\n')
}

impl Engine {
    /// The newest edit of template `name`, if it was ever edited.
    pub fn notification_template(&self, name: &str) -> Option<&NotificationTemplate> {
        self.templates.get(name)
    }

    /// Every edited template, by name.
    pub fn notification_templates(&self) -> impl Iterator<Item = &NotificationTemplate> {
        self.templates.values()
    }

    /// `Command::SetNotificationTemplate`: every check before any change.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set_notification_template(
        &mut self,
        by: UserId,
        name: &str,
        subject: &str,
        content: &str,
        active: bool,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        self.staff_user(by)?;
        if !valid_template_name(name) || !valid_template_text(subject, content) {
            return Err(RejectReason::InvalidNotificationTemplate);
        }
        let version = match self.templates.get(name) {
            Some(t) => t.version + 1,
            None if self.templates.len() >= NOTIFY_TEMPLATES_MAX => {
                return Err(RejectReason::InvalidNotificationTemplate)
            }
            None => 1,
        };
        let t = NotificationTemplate {
            name: name.to_owned(),
            subject: subject.to_owned(),
            content: content.to_owned(),
            active,
            version,
            updated_by: by,
            updated_ms: ts,
        };
        out.push(Event::NotificationTemplateSet(Box::new(t.clone())));
        self.templates.insert(t.name.clone(), t);
        Ok(())
    }

    /// Template state is consistent: keyed by its own name, valid, bounded,
    /// edited no later than the engine's time.
    pub(crate) fn check_templates(&self) -> Result<(), String> {
        if self.templates.len() > NOTIFY_TEMPLATES_MAX {
            return Err(format!("{} notification templates", self.templates.len()));
        }
        for (name, t) in &self.templates {
            if *name != t.name
                || !valid_template_name(name)
                || !valid_template_text(&t.subject, &t.content)
                || t.version == 0
                || t.updated_ms > self.last_ts_ms
            {
                return Err(format!("notification template {name:?} is inconsistent"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::model::roles;

    fn engine_with_admin() -> Engine {
        let mut e = Engine::new();
        let mut out = Vec::new();
        e.apply(
            1,
            10,
            &Command::CreateUser {
                username: "admin".into(),
                email: "admin@example.com".into(),
                password_hash: "$argon2id$x".into(),
                roles: roles::ADMIN,
            },
            &mut out,
        );
        e
    }

    fn set(name: &str, subject: &str, content: &str) -> Command {
        Command::SetNotificationTemplate {
            by: UserId(1),
            name: name.into(),
            subject: subject.into(),
            content: content.into(),
            active: true,
        }
    }

    #[test]
    fn edits_count_versions_and_survive_a_snapshot() {
        let mut e = engine_with_admin();
        let before = e.state_hash();
        let mut out = Vec::new();
        e.apply(
            2,
            20,
            &set("deposit_credited", "Funds in", "{amount} {asset}"),
            &mut out,
        );
        let Some(Event::NotificationTemplateSet(t)) = out.last() else {
            panic!("{out:?}");
        };
        assert_eq!((t.version, t.updated_ms, t.updated_by), (1, 20, UserId(1)));
        assert_ne!(e.state_hash(), before);
        out.clear();
        e.apply(
            3,
            30,
            &set("deposit_credited", "Funds", "{amount}\nok"),
            &mut out,
        );
        let t = e.notification_template("deposit_credited").unwrap();
        assert_eq!((t.version, t.subject.as_str()), (2, "Funds"));
        e.assert_invariants();
        let loaded = Engine::from_snapshot(&e.snapshot_bytes()).unwrap();
        assert_eq!(loaded.state_hash(), e.state_hash());
        assert_eq!(loaded.notification_template("deposit_credited"), Some(t));
    }

    #[test]
    fn bad_text_names_and_actors_are_refused_and_change_nothing() {
        let mut e = engine_with_admin();
        let hash = e.state_hash();
        let long_content = "x".repeat(NOTIFY_TEMPLATE_CONTENT_MAX_LEN + 1);
        let long_subject = "x".repeat(NOTIFY_TEMPLATE_SUBJECT_MAX_LEN + 1);
        let long_name = "x".repeat(NOTIFY_TEMPLATE_NAME_MAX_LEN + 1);
        let mut seq = 1;
        for (cmd, reason) in [
            (
                set("a", "t", &long_content),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                set("a", &long_subject, "b"),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                set(&long_name, "t", "b"),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                set("Bad-Name", "t", "b"),
                RejectReason::InvalidNotificationTemplate,
            ),
            (set("a", "", "b"), RejectReason::InvalidNotificationTemplate),
            (
                set("a", "t", "  "),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                set("a", "t\n", "b"),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                set("a", "t", "b\u{7}"),
                RejectReason::InvalidNotificationTemplate,
            ),
            (
                Command::SetNotificationTemplate {
                    by: UserId(9),
                    name: "a".into(),
                    subject: "t".into(),
                    content: "b".into(),
                    active: true,
                },
                RejectReason::UnknownUser,
            ),
        ] {
            seq += 1;
            let mut out = Vec::new();
            e.apply(seq, 20, &cmd, &mut out);
            assert_eq!(out, vec![Event::Rejected { reason }], "{cmd:?}");
        }
        assert_eq!(e.state_hash(), hash);
        // Bounded: at most NOTIFY_TEMPLATES_MAX names.
        for i in 0..NOTIFY_TEMPLATES_MAX {
            seq += 1;
            let mut out = Vec::new();
            e.apply(seq, 20, &set(&format!("t{i}"), "t", "b"), &mut out);
            assert!(matches!(out[..], [Event::NotificationTemplateSet(_)]));
        }
        let mut out = Vec::new();
        e.apply(seq + 1, 20, &set("one_more", "t", "b"), &mut out);
        assert_eq!(
            out,
            vec![Event::Rejected {
                reason: RejectReason::InvalidNotificationTemplate
            }]
        );
        // An existing name can still be edited.
        out.clear();
        e.apply(seq + 2, 20, &set("t0", "t2", "b"), &mut out);
        assert!(matches!(out[..], [Event::NotificationTemplateSet(_)]));
    }
}

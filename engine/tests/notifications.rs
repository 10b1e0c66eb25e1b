//! Notification commands: stateless checks and echoes (webhook URL shape
//! and length, 1..=NOTIFY_MAX_READ_IDS ids, a registered user), rejections
//! change nothing, and the journal encoding round-trips.

mod common;
use common::*;
use engine::*;

#[test]
fn webhook_set_and_removed() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let url = "https://example.com/hook".to_string();
    let ev = h.ok(Command::SetNotificationWebhook {
        user: alice,
        url: url.clone(),
    });
    assert_eq!(ev, vec![Event::NotificationWebhookSet { user: alice, url }]);
    let ev = h.ok(Command::SetNotificationWebhook {
        user: alice,
        url: String::new(),
    });
    assert_eq!(
        ev,
        vec![Event::NotificationWebhookSet {
            user: alice,
            url: String::new()
        }]
    );
}

#[test]
fn bad_webhooks_and_read_marks_are_rejected() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let long = format!("http://example.com/{}", "a".repeat(NOTIFY_WEBHOOK_MAX_LEN));
    for url in ["ftp://x", "http://a b", long.as_str()] {
        assert_eq!(
            h.reject(Command::SetNotificationWebhook {
                user: alice,
                url: url.into(),
            }),
            RejectReason::InvalidNotificationRequest
        );
    }
    assert_eq!(
        h.reject(Command::SetNotificationWebhook {
            user: UserId(0),
            url: "http://example.com/".into(),
        }),
        RejectReason::UnknownUser
    );
    for ids in [vec![], vec![1; NOTIFY_MAX_READ_IDS + 1]] {
        assert_eq!(
            h.reject(Command::MarkNotificationsRead { user: alice, ids }),
            RejectReason::InvalidNotificationRequest
        );
    }
    assert_eq!(
        h.reject(Command::MarkNotificationsRead {
            user: UserId(99),
            ids: vec![1],
        }),
        RejectReason::UnknownUser
    );
}

#[test]
fn read_marks_carry_the_journal_time_and_encode() {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let cmd = Command::MarkNotificationsRead {
        user: alice,
        ids: vec![7 << 16, 9 << 16],
    };
    assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
    let ev = h.ok(cmd);
    assert_eq!(
        ev,
        vec![Event::NotificationsRead {
            user: alice,
            ids: vec![7 << 16, 9 << 16],
            read_ms: h.ts
        }]
    );
}

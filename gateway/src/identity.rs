//! Identity read model: users (name, password hash, status, roles, KYC) and,
//! to come, API keys, maintained from engine events on the publisher thread
//! and read by the HTTP handlers (login, signature checks, RBAC). Built from
//! the recovered engine at startup, then kept current by events.

use std::collections::HashMap;

use engine::{Engine, Event, UserId, UserStatus};

#[derive(Debug, Clone)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub status: UserStatus,
    pub roles: u32,
    pub kyc_level: u8,
}

#[derive(Debug, Default)]
pub struct IdentityView {
    pub users: HashMap<UserId, UserView>,
    /// Lower-cased username -> id.
    pub by_name: HashMap<String, UserId>,
    pub last_seq: u64,
}

impl IdentityView {
    pub fn from_engine(e: &Engine) -> IdentityView {
        let mut v = IdentityView {
            last_seq: e.last_seq(),
            ..IdentityView::default()
        };
        for u in e.users().iter().skip(1) {
            v.insert(UserView {
                id: u.id,
                username: u.username.clone(),
                email: u.email.clone(),
                password_hash: u.password_hash.clone(),
                status: u.status,
                roles: u.roles,
                kyc_level: u.kyc_level,
            });
        }
        v
    }

    fn insert(&mut self, u: UserView) {
        self.by_name.insert(u.username.to_ascii_lowercase(), u.id);
        self.users.insert(u.id, u);
    }

    pub fn user(&self, id: UserId) -> Option<&UserView> {
        self.users.get(&id)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&UserView> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .and_then(|id| self.users.get(id))
    }

    pub fn apply(&mut self, seq: u64, events: &[Event]) {
        self.last_seq = seq;
        for ev in events {
            match ev {
                Event::UserCreated {
                    user,
                    username,
                    email,
                    password_hash,
                    roles,
                } => self.insert(UserView {
                    id: *user,
                    username: username.clone(),
                    email: email.clone(),
                    password_hash: password_hash.clone(),
                    status: UserStatus::Active,
                    roles: *roles,
                    kyc_level: 0,
                }),
                Event::UserStatusChanged { user, status } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.status = *status;
                    }
                }
                Event::UserRolesChanged { user, roles } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.roles = *roles;
                    }
                }
                Event::KycLevelSet { user, level } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.kyc_level = *level;
                    }
                }
                _ => {}
            }
        }
    }
}

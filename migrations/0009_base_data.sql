-- 0009 base data: only what the journal does not write, i.e. roles,
-- permissions and the role -> permission matrix (mirrored in README.md for the
-- gateway). Assets, trading pairs, users, templates and rules arrive through
-- the journal.
--
-- Semantics: a permission always covers the caller's own resources;
-- acting on another user's data additionally needs users:read (reads) or the
-- explicit *_any / admin permission (orders:cancel_any, accounts:adjust, ...).

INSERT INTO roles (id, name, description) VALUES
    (1, 'ADMIN',    'Full access'),
    (2, 'OPERATOR', 'Runs the exchange: assets, pairs, deposits, withdrawals, settlement, risk'),
    (3, 'SUPPORT',  'Reads users, KYC, orders and accounts; can lock users'),
    (4, 'AUDITOR',  'Read-only access to everything, including the audit log'),
    (5, 'TRADER',   'Trades and manages own wallet and API keys');
SELECT setval(pg_get_serial_sequence('roles', 'id'), (SELECT max(id) FROM roles));

INSERT INTO permissions (name, resource, action, description)
SELECT r || ':' || a, r, a, d
FROM (VALUES
    ('users',         'read',       'Read user profiles and status'),
    ('users',         'write',      'Edit user profiles'),
    ('users',         'lock',       'Lock, unlock, suspend users'),
    ('roles',         'grant',      'Grant and revoke roles'),
    ('assets',        'read',       'Read asset definitions'),
    ('assets',        'write',      'Create and change assets'),
    ('pairs',         'read',       'Read trading pairs'),
    ('pairs',         'write',      'Create trading pairs, change status and filters'),
    ('kyc',           'read',       'Read KYC records'),
    ('kyc',           'write',      'Submit own KYC'),
    ('kyc',           'review',     'Approve or reject KYC'),
    ('deposits',      'read',       'Read deposits'),
    ('deposits',      'write',      'Post deposits (admin funding)'),
    ('withdrawals',   'read',       'Read withdrawals'),
    ('withdrawals',   'write',      'Request own withdrawals'),
    ('withdrawals',   'approve',    'Approve or reject withdrawals'),
    ('risk',          'read',       'Read risk rules and events'),
    ('risk',          'write',      'Manage risk rules, resolve risk events'),
    ('settlement',    'read',       'Read settlement batches and details'),
    ('settlement',    'run',        'Run settlement for a date'),
    ('notifications', 'read',       'Read notifications and templates'),
    ('notifications', 'write',      'Manage notification templates'),
    ('audit',         'read',       'Query the audit log'),
    ('fees',          'read',       'Read the fee schedule'),
    ('fees',          'write',      'Change the fee schedule'),
    ('orders',        'read',       'Read orders and trades'),
    ('orders',        'write',      'Place and cancel own orders'),
    ('orders',        'cancel_any', 'Cancel any user''s orders'),
    ('accounts',      'read',       'Read balances and ledger'),
    ('accounts',      'adjust',     'Adjust balances (admin adjustment)'),
    ('api_keys',      'read',       'List API keys'),
    ('api_keys',      'write',      'Create and revoke API keys')
) AS p (r, a, d)
ORDER BY r, a;

-- ADMIN: everything.
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p WHERE r.name = 'ADMIN';

-- AUDITOR: every read permission, nothing else.
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r CROSS JOIN permissions p WHERE r.name = 'AUDITOR' AND p.action = 'read';

INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id
FROM (VALUES
    ('OPERATOR', 'users:read'), ('OPERATOR', 'users:lock'),
    ('OPERATOR', 'assets:read'), ('OPERATOR', 'assets:write'),
    ('OPERATOR', 'pairs:read'), ('OPERATOR', 'pairs:write'),
    ('OPERATOR', 'kyc:read'), ('OPERATOR', 'kyc:review'),
    ('OPERATOR', 'deposits:read'), ('OPERATOR', 'deposits:write'),
    ('OPERATOR', 'withdrawals:read'), ('OPERATOR', 'withdrawals:approve'),
    ('OPERATOR', 'risk:read'), ('OPERATOR', 'risk:write'),
    ('OPERATOR', 'settlement:read'), ('OPERATOR', 'settlement:run'),
    ('OPERATOR', 'notifications:read'), ('OPERATOR', 'notifications:write'),
    ('OPERATOR', 'fees:read'), ('OPERATOR', 'fees:write'),
    ('OPERATOR', 'orders:read'), ('OPERATOR', 'orders:cancel_any'),
    ('OPERATOR', 'accounts:read'),

    ('SUPPORT', 'users:read'), ('SUPPORT', 'users:lock'),
    ('SUPPORT', 'kyc:read'),
    ('SUPPORT', 'orders:read'),
    ('SUPPORT', 'accounts:read'),

    ('TRADER', 'assets:read'), ('TRADER', 'pairs:read'), ('TRADER', 'fees:read'),
    ('TRADER', 'orders:read'), ('TRADER', 'orders:write'),
    ('TRADER', 'accounts:read'),
    ('TRADER', 'deposits:read'),
    ('TRADER', 'withdrawals:read'), ('TRADER', 'withdrawals:write'),
    ('TRADER', 'kyc:read'), ('TRADER', 'kyc:write'),
    ('TRADER', 'notifications:read'),
    ('TRADER', 'api_keys:read'), ('TRADER', 'api_keys:write')
) AS m (role_name, permission_name)
JOIN roles r ON r.name = m.role_name
JOIN permissions p ON p.name = m.permission_name;

-- Guard against typos in the matrix above: every pair must have matched.
DO $$
BEGIN
    IF (SELECT count(*) FROM role_permissions rp JOIN roles r ON r.id = rp.role_id
        WHERE r.name IN ('OPERATOR', 'SUPPORT', 'TRADER')) <> 42 THEN
        RAISE EXCEPTION 'base data: role/permission matrix does not match the permission list';
    END IF;
END
$$;

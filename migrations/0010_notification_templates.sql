-- 0010 notification templates: the built-in IN_APP templates the in-app
-- notifications are rendered from (persister::notify::TEMPLATES; a unit test
-- keeps this file and that table equal). Base data like roles: the journal
-- does not write templates (they are not editable yet). Placeholders in
-- braces ({asset}, {amount}, ...) are filled per notification.

INSERT INTO notification_templates (id, name, type, subject, content) VALUES
    (1, 'order_filled', 'IN_APP', 'Order filled',
     'Your order {order_id} on {symbol} was filled: {qty} {base} for {quote_qty} {quote}.'),
    (2, 'order_expired', 'IN_APP', 'Order expired',
     'Your order {order_id} on {symbol} ended {status} after filling {qty} {base}.'),
    (3, 'order_canceled', 'IN_APP', 'Order canceled',
     'Your order {order_id} on {symbol} was canceled by the exchange after filling {qty} {base}.'),
    (4, 'deposit_credited', 'IN_APP', 'Deposit credited',
     '{amount} {asset} were credited to your account (deposit {deposit_id}).'),
    (5, 'withdrawal_requested', 'IN_APP', 'Withdrawal requested',
     'Your withdrawal {withdrawal_id} of {amount} {asset} (fee {fee}) to {address} awaits approval.'),
    (6, 'withdrawal_sent', 'IN_APP', 'Withdrawal sent',
     'Your withdrawal {withdrawal_id} of {amount} {asset} to {address} was sent (transaction {tx_hash}).'),
    (7, 'withdrawal_rejected', 'IN_APP', 'Withdrawal rejected',
     'Your withdrawal {withdrawal_id} of {amount} {asset} was rejected; the funds are available again.'),
    (8, 'kyc_approved', 'IN_APP', 'Verification approved',
     'Your KYC verification {kyc_id} was approved: your level is now {level}.'),
    (9, 'kyc_rejected', 'IN_APP', 'Verification rejected',
     'Your KYC verification {kyc_id} (level {level}) was rejected: {notes}'),
    (10, 'login_locked', 'IN_APP', 'Password login locked',
     'Password login is locked until {locked_until} after {failures} failed attempts.'),
    (11, 'api_key_created', 'IN_APP', 'New API key',
     'API key {api_key} ("{label}", permissions {permissions}) was created.')
ON CONFLICT (id) DO NOTHING;

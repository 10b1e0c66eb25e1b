"""Seeded random hostile requests against every REST route of a running
`serve` (Binance /api/v3 and native /api/v1, public, signed, bearer and
admin), checking the contract's promise for bad input: never a 5xx other
than the documented 503s, always a JSON answer (Binance errors as
{"code","msg"}), never a dropped connection, and the server still up.

  fuzz_http.py PORT REQUESTS SEED ADMIN_USER ADMIN_PASSWORD

Exits 1 and prints every offending request when anything breaks the rules.
Standard library only. Two answers come from the HTTP layer (hyper) before
any of our code runs and are accepted as they are: 414 with an empty body
for a request line over 64 KiB, and a connection closed while the client
still sends a body far over the body limit (after the 413).
"""
import http.client, json, random, sys, time, hmac, hashlib, urllib.parse
HOST, PORT = "127.0.0.1", int(sys.argv[1]); N = int(sys.argv[2]); seed = int(sys.argv[3])
ADMIN_USER, ADMIN_PW = sys.argv[4], sys.argv[5]
rnd = random.Random(seed)
def call(method, path, body=None, headers=None, raw=False):
    c = http.client.HTTPConnection(HOST, PORT, timeout=10)
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body); h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data, r.getheaders()
st, d, _ = call("POST", "/api/v1/auth/login", {"username": ADMIN_USER, "password": ADMIN_PW})
admin = json.loads(d)["access_token"]
AH = {"Authorization": "Bearer " + admin}
# A user of this seed's own: an earlier seed's run on the same server may
# have locked, disabled or re-keyed its user (that is what fuzzing does).
FUZZ_USER = "fuzzuser%d" % seed
call("POST", "/api/v1/auth/register", {"username": FUZZ_USER, "email": "f%d@x.io" % seed, "password": "fuzz-user-password-1"})
st, d, _ = call("POST", "/api/v1/auth/login", {"username": FUZZ_USER, "password": "fuzz-user-password-1"})
assert st == 200, ("login of the fuzz user", st, d)
user = json.loads(d)["access_token"]; UH = {"Authorization": "Bearer " + user}
st, d, _ = call("POST", "/api/v1/api-keys", {"label": "k", "permissions": ["READ", "TRADE", "WITHDRAW"]}, UH)
k = json.loads(d); KEY, SECRET = k["apiKey"], k["secretKey"]
for a, amt in (("USDT", "100000"), ("BTC", "10"), ("ETH", "100")):
    st, d, _ = call("POST", "/api/v1/admin/deposits", {"username": FUZZ_USER, "asset": a, "amount": amt, "tx_hash": "t%d%s" % (seed, a), "confirmations": 100}, AH)
    assert st == 201, (st, d)
ROUTES = [
 ("GET","/api/v3/ping"),("GET","/api/v3/time"),("GET","/api/v3/exchangeInfo"),("GET","/api/v3/depth"),("GET","/api/v3/trades"),
 ("GET","/api/v3/aggTrades"),("GET","/api/v3/klines"),("GET","/api/v3/uiKlines"),("GET","/api/v3/ticker/24hr"),("GET","/api/v3/ticker/price"),
 ("GET","/api/v3/ticker/bookTicker"),("GET","/api/v3/avgPrice"),
 ("POST","/api/v3/order"),("GET","/api/v3/order"),("DELETE","/api/v3/order"),("POST","/api/v3/order/test"),("POST","/api/v3/order/cancelReplace"),
 ("GET","/api/v3/openOrders"),("DELETE","/api/v3/openOrders"),("GET","/api/v3/allOrders"),("GET","/api/v3/account"),("GET","/api/v3/myTrades"),
 ("POST","/api/v3/userDataStream"),("PUT","/api/v3/userDataStream"),("DELETE","/api/v3/userDataStream"),
 ("POST","/api/v1/auth/register"),("POST","/api/v1/auth/login"),("POST","/api/v1/auth/refresh"),("GET","/api/v1/me"),
 ("POST","/api/v1/api-keys"),("GET","/api/v1/api-keys"),("DELETE","/api/v1/api-keys/{s}"),
 ("POST","/api/v1/kyc"),("GET","/api/v1/kyc"),("GET","/api/v1/wallet/balances"),("GET","/api/v1/wallet/deposit-address/{s}"),
 ("POST","/api/v1/wallet/withdrawals"),("GET","/api/v1/wallet/withdrawals"),("GET","/api/v1/wallet/history"),("GET","/api/v1/wallet/ledger"),
 ("GET","/api/v1/notifications"),("POST","/api/v1/notifications/webhook"),("POST","/api/v1/notifications/{n}/read"),
 ("GET","/api/v1/admin/assets"),("POST","/api/v1/admin/assets"),("PUT","/api/v1/admin/assets/{s}"),
 ("GET","/api/v1/admin/pairs"),("POST","/api/v1/admin/pairs"),("PUT","/api/v1/admin/pairs/{s}"),("POST","/api/v1/admin/pairs/{s}/status"),("PUT","/api/v1/admin/pairs/{s}/status"),
 ("GET","/api/v1/admin/users"),("GET","/api/v1/admin/users/{n}"),("POST","/api/v1/admin/users/{n}/lock"),("POST","/api/v1/admin/users/{n}/unlock"),
 ("POST","/api/v1/admin/users/{n}/roles"),("DELETE","/api/v1/admin/users/{n}/roles/{s}"),("PUT","/api/v1/admin/users/{n}/kyc-level"),("GET","/api/v1/admin/users/{n}/ledger"),
 ("GET","/api/v1/admin/kyc"),("POST","/api/v1/admin/kyc/{n}/approve"),("POST","/api/v1/admin/kyc/{n}/reject"),
 ("POST","/api/v1/admin/deposits"),("GET","/api/v1/admin/deposits"),("GET","/api/v1/admin/withdrawals"),("POST","/api/v1/admin/withdrawals/{n}/approve"),("POST","/api/v1/admin/withdrawals/{n}/reject"),
 ("GET","/api/v1/admin/risk/rules"),("POST","/api/v1/admin/risk/rules"),("PUT","/api/v1/admin/risk/rules/{n}"),("DELETE","/api/v1/admin/risk/rules/{n}"),
 ("GET","/api/v1/admin/risk/events"),("GET","/api/v1/admin/risk/events/{n}"),("PUT","/api/v1/admin/risk/events/{n}"),("POST","/api/v1/admin/risk/events/{n}"),
 ("GET","/api/v1/admin/settlements"),("POST","/api/v1/admin/settlements"),("GET","/api/v1/admin/settlements/{n}"),("GET","/api/v1/admin/settlements/{n}/details"),
 ("GET","/api/v1/admin/notifications/templates"),("PUT","/api/v1/admin/notifications/templates/{s}"),
 ("GET","/api/v1/admin/audit-logs"),("GET","/api/v1/admin/fees"),("PUT","/api/v1/admin/fees/{s}"),("GET","/health"),("GET","/metrics"),
]
NAMES = ["symbol","side","type","quantity","price","timeInForce","newClientOrderId","origClientOrderId","orderId","quoteOrderQty","stopPrice","trailingDelta",
 "icebergQty","selfTradePreventionMode","newOrderRespType","cancelReplaceMode","cancelOrderId","cancelOrigClientOrderId","limit","fromId","startTime","endTime",
 "interval","symbols","windowSize","type","recvWindow","timeZone","computeCommissionRates","listenKey","omitZeroBalances","cancelRestrictions","strategyId"]
JNAMES = ["username","email","password","asset","amount","tx_hash","confirmations","symbol","status","notes","level","role","roles","name","subject","content","active",
 "url","parameters","rule_type","date","address","permissions","type","public_key","label","limit","document_type","document_number","data","maker_fee","taker_fee",
 "base","quote","tick_size","step_size","min_qty","max_qty","min_notional","decimals","withdraw_fee","min_withdraw","reason","refresh_token","kyc_level","offset","page","action","from","to","user_id","enabled","severity","description","tx_hash","start","end"]
def hostile():
    return rnd.choice(["", "0", "-1", "1", "1e400", "1e-400", "NaN", "inf", "-0", "0.1", "99999999999999999999999999999999999", str(2**63), str(2**64), str(-2**63-1),
      "0.000000000000000000000001", "BTCUSDT", "btcusdt", "ETHBTC", "BUY", "SELL", "LIMIT", "MARKET", "GTC", "IOC", "FOK", "LIMIT_MAKER", "STOP_LOSS_LIMIT",
      "\u0000", "\u202e", "😀"*50, "A"*5000, "A"*70000, "' OR 1=1 --", "%00", "%", "%zz", "../../etc/passwd", "true", "false", "null", "[]", "{}", "1,2", "[\"BTCUSDT\"]",
      "2026-11-26", "2026-13-45", "1s", "1M", "3d", "7x", "30000", "0.001", "12345.678901234567890", " 1", "1 ", "+1", "0x10", "1_000", "١٢٣", "ADMIN", "TRADER", "READ", "TRADE", "HMAC", "ED25519"])
def hjson():
    c = rnd.random()
    if c < 0.45: return hostile()
    if c < 0.6: return rnd.choice([0, -1, 1, 2**63, 2**64, -2**70, 1e308, -1.5, 0.1, 10**40])
    if c < 0.7: return rnd.choice([True, False, None])
    if c < 0.8: return [hostile() for _ in range(rnd.randint(0, 3))]
    if c < 0.9: return {rnd.choice(JNAMES): hostile() for _ in range(rnd.randint(0, 3))}
    return rnd.choice(["USDT", "BTC", FUZZ_USER, ADMIN_USER, "0.5", "100", "1"])
def fill(path):
    while "{n}" in path: path = path.replace("{n}", rnd.choice(["1","2","3","0","-1","999999999999","18446744073709551616","abc","%2e%2e","1.5",""]), 1)
    while "{s}" in path: path = path.replace("{s}", rnd.choice(["BTCUSDT","BTC","USDT","order_filled","x","%00","A"*300,"..","ETHBTC",KEY,"😀"]), 1)
    return urllib.parse.quote(path, safe="/%")
def query(signed):
    ps = [(rnd.choice(NAMES), hostile()) for _ in range(rnd.randint(0, 8))]
    if signed:
        ps.append(("timestamp", str(int(time.time()*1000)) if rnd.random() < 0.9 else hostile()))
    q = urllib.parse.urlencode(ps)
    if signed and rnd.random() < 0.9:
        q += "&signature=" + hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()
    return q
bad = 0; stats = {}
for i in range(N):
    m, p = rnd.choice(ROUTES)
    if rnd.random() < 0.05: m = rnd.choice(["GET","POST","PUT","DELETE","PATCH"])
    path = fill(p)
    h = {}
    a = rnd.random()
    if a < 0.35: h.update(AH)
    elif a < 0.55: h.update(UH)
    elif a < 0.6: h["Authorization"] = rnd.choice(["Bearer x", "Bearer " + admin[:-2] + "aa", "Basic abc", "Bearer", "bearer " + admin])
    if path.startswith("/api/v3") and rnd.random() < 0.8: h["X-MBX-APIKEY"] = KEY if rnd.random() < 0.9 else urllib.parse.quote(hostile()[:200])
    body = None
    if path.startswith("/api/v3"):
        q = query(rnd.random() < 0.8)
        if rnd.random() < 0.3 and m != "GET":
            body = q; h["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            path += "?" + q
    else:
        if m in ("POST","PUT","DELETE","PATCH") and rnd.random() < 0.9:
            if rnd.random() < 0.1: body = rnd.choice(["{", "[]", "null", "1", "\"x\"", "{\"a\":" * 200, "x"*2000000]); h["Content-Type"] = "application/json"
            else: body = {rnd.choice(JNAMES): hjson() for _ in range(rnd.randint(0, 7))}
        if rnd.random() < 0.3: path += "?" + urllib.parse.urlencode([(rnd.choice(JNAMES), hostile()[:100]) for _ in range(rnd.randint(1, 3))])
    try:
        st, data, hdrs = call(m, path, body, h)
    except (BrokenPipeError, ConnectionResetError) as e:
        if body is not None and len(body) > 65536:
            continue
        print("EXC", m, path[:200], repr(body)[:300], h, e); bad += 1; continue
    except Exception as e:
        print("EXC", m, path[:200], repr(body)[:300], h, e); bad += 1; continue
    stats[st] = stats.get(st, 0) + 1
    ok = st < 500 or st == 503
    j = None
    if st == 414 and len(path) > 65000: continue
    if path.startswith("/metrics") and st == 200: pass
    else:
        try: j = json.loads(data)
        except Exception: ok = False
        if st >= 400 and not (isinstance(j, dict) and "code" in j and "msg" in j): ok = False
        if st == 503 and not (isinstance(j, dict) and j.get("code") in (-5030, -1008)): ok = False
    if not ok:
        bad += 1; print("BAD", st, m, path[:200], repr(body)[:300], h, data[:300])
st, d, _ = call("GET", "/api/v3/ping")
if st != 200: print("server no longer answers ping:", st, d); bad += 1
print("done", N, "bad", bad, "statuses", sorted(stats.items()))
sys.exit(1 if bad else 0)

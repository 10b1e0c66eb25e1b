"""Streams from a running mini-exchange through binance-connector's
unmodified WebSocket stream client (SpotWebsocketStreamClient), changing
only its stream URL (API.md). Called by gateway/tests/python_clients.rs with:

    run_streams.py BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC. One client subscribes to
btcusdt@trade and btcusdt@depth@100ms, another to A's user data stream
(listen key from POST /api/v3/userDataStream, then `user_data`). Once every
subscription is confirmed, B rests a sell and A buys it; the script waits
(with deadlines, never fixed sleeps) for the trade event, the depth diffs
and A's executionReports, checks them, closes the listen key (the stream
reports listenKeyExpired), and prints one JSON summary line starting with
"SUMMARY " for the Rust side. Any failure exits non-zero with the reason.
"""

import json
import os
import sys
import traceback

from clientlib import DEADLINE_S, Inbox, check


def reply(msgs, req_id):
    return [m for m in msgs if m.get("id") == req_id and "result" in m]


def main(base, ws_url, key_a, sec_a, key_b, sec_b):
    from binance.spot import Spot
    from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient

    a = Spot(api_key=key_a, api_secret=sec_a, base_url=base)
    b = Spot(api_key=key_b, api_secret=sec_b, base_url=base)
    listen_key = a.new_listen_key()["listenKey"]
    check(len(listen_key) == 60, f"listen key {listen_key}")

    market, user = Inbox(), Inbox()
    mc = SpotWebsocketStreamClient(stream_url=ws_url, on_message=market.on_message,
                                   on_error=market.on_error, timeout=DEADLINE_S)
    uc = SpotWebsocketStreamClient(stream_url=ws_url, on_message=user.on_message,
                                   on_error=user.on_error, timeout=DEADLINE_S)
    try:
        mc.trade(symbol="btcusdt", id=1)
        mc.diff_book_depth(symbol="btcusdt", speed=100, id=2)
        uc.user_data(listen_key=listen_key, id=3)
        for inbox, req_id in [(market, 1), (market, 2), (user, 3)]:
            r = inbox.wait(f"SUBSCRIBE reply {req_id}", lambda m: reply(m, req_id))
            check(r[0]["result"] is None, f"subscribe {req_id}: {r}")

        sell = b.new_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                           timeInForce="GTC", quantity=0.002, price=30000)
        check(sell["status"] == "NEW", f"sell {sell}")
        buy = a.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                          timeInForce="GTC", quantity=0.002, price=30000,
                          newClientOrderId="stream-buy-1")
        check(buy["status"] == "FILLED", f"buy {buy}")
        oid = buy["orderId"]

        trades = market.wait("trade event", lambda m: [x for x in m if x.get("e") == "trade"])
        t = trades[0]
        check(len(trades) == 1, f"one trade expected: {trades}")
        check((t["s"], t["p"], t["q"]) == ("BTCUSDT", "30000.00000000", "0.00200000"), f"trade {t}")
        check(t["m"] is False, f"the buyer took: {t}")
        check(isinstance(t["t"], int) and isinstance(t["T"], int), f"trade typing {t}")

        # Depth: the sell's level appears, then leaves (qty 0); U/u contiguous.
        def depth(m):
            ev = [x for x in m if x.get("e") == "depthUpdate"]
            levels = [lv for x in ev for lv in x["a"] if lv[0] == "30000.00000000"]
            return ev if levels and levels[-1][1] == "0.00000000" else None
        diffs = market.wait("depth diffs of the 30000 ask", depth)
        for prev, cur in zip(diffs, diffs[1:]):
            check(cur["U"] == prev["u"] + 1, f"depth gap: {prev} then {cur}")
        asks = [lv for x in diffs for lv in x["a"] if lv[0] == "30000.00000000"]

        def done(m):
            mine = [x for x in m if x.get("e") == "executionReport" and x["i"] == oid]
            return mine if any(x["X"] == "FILLED" for x in mine) else None
        reports = user.wait("A's executionReports", done)
        check([(r["x"], r["X"]) for r in reports] == [("NEW", "NEW"), ("TRADE", "FILLED")],
              f"reports {reports}")
        fill = reports[1]
        check((fill["l"], fill["L"], fill["z"]) == ("0.00200000", "30000.00000000", "0.00200000"),
              f"fill {fill}")
        check(fill["t"] == t["t"], f"report trade id {fill['t']} vs stream {t['t']}")
        check(fill["c"] == "stream-buy-1", f"client id {fill}")
        positions = user.wait("outboundAccountPosition",
                              lambda m: [x for x in m if x.get("e") == "outboundAccountPosition"])

        # Keepalive, then close: the stream says listenKeyExpired.
        check(a.renew_listen_key(listen_key) == {}, "keepalive")
        check(a.close_listen_key(listen_key) == {}, "close")
        user.wait("listenKeyExpired",
                  lambda m: [x for x in m if x.get("e") == "listenKeyExpired"])

        summary = {
            "trade": t,
            "depth_events": len(diffs),
            "ask_levels": asks,
            "order_id": oid,
            "reports": [{k: r[k] for k in ("x", "X", "i", "c", "l", "L", "z", "t", "n", "N")}
                        for r in reports],
            "positions": len(positions),
            "expired": True,
        }
        print("SUMMARY " + json.dumps(summary), flush=True)
    finally:
        # Close without waiting on the reader threads (a server that never
        # answers the close must not hang the test).
        for c in (mc, uc):
            try:
                c.socket_manager.close()
                c.socket_manager.join(timeout=5)
            except Exception:
                pass


if __name__ == "__main__":
    code = 0
    try:
        main(*sys.argv[1:7])
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The client threads are not daemons; leave regardless of their state.
    os._exit(code)

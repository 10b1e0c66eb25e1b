// Drive a running mini-exchange with the npm package `binance` (the most
// used Node.js Binance SDK), unmodified: only `baseUrl` (REST) and `wsUrl`
// (streams, /ws-api/v3) point here. Called by gateway/tests/python_clients.rs:
//
//   node run_binance_node.js BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B
//
// Trader A holds USDT, trader B holds BTC. REST (MainClient): exchange
// info, a resting sell, the book, a crossing buy, queries, cancel and the
// -2011 of a second cancel. WebSocket API (WebsocketAPIClient): order.place,
// order.status and A's user data (userDataStream.subscribe.signature). Streams (WebsocketClient on /stream): the trade and the
// 100 ms diff depth of that order flow, waited for with deadlines. Prints
// "binance node: ok" and one line starting with "SUMMARY " (JSON).
'use strict';

const { MainClient, WebsocketAPIClient, WebsocketClient } = require('binance');

const DEADLINE_MS = 20000;
const started = Date.now();
const step = (what) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${what}\n`);

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Resolves once pred(messages) holds; rejects after the deadline.
function until(msgs, what, pred) {
  return new Promise((resolve, reject) => {
    const end = Date.now() + DEADLINE_MS;
    const tick = () => {
      const hit = pred(msgs);
      if (hit) return resolve(hit);
      if (Date.now() > end) return reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(msgs).slice(0, 2000)}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

async function gauge(base, name) {
  const text = await (await fetch(base + '/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  check(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

async function main() {
  const [base, wsUrl, keyA, secA, keyB, secB] = process.argv.slice(2, 8);
  const silent = { trace: () => {}, info: () => {}, error: (...a) => step(`client error: ${JSON.stringify(a)}`) };
  const rest = (key, secret) => new MainClient({ api_key: key, api_secret: secret, baseUrl: base });
  const a = rest(keyA, secA);
  const b = rest(keyB, secB);

  await a.testConnectivity();
  // (getServerTime is not called: this library always asks Binance's own
  // host for the time, whatever baseUrl says.)
  const info = await a.getExchangeInfo({ symbol: 'BTCUSDT' });
  check(info.symbols[0].symbol === 'BTCUSDT', 'exchangeInfo');
  const sell = await b.submitNewOrder({ symbol: 'BTCUSDT', side: 'SELL', type: 'LIMIT', timeInForce: 'GTC', quantity: 0.002, price: 30000 });
  check(sell.status === 'NEW', `sell ${JSON.stringify(sell)}`);
  const book = await a.getOrderBook({ symbol: 'BTCUSDT', limit: 5 });
  check(JSON.stringify(book.asks) === JSON.stringify([['30000.00000000', '0.00200000']]), `book ${JSON.stringify(book)}`);
  const buy = await a.submitNewOrder({ symbol: 'BTCUSDT', side: 'BUY', type: 'LIMIT', timeInForce: 'GTC', quantity: 0.001, price: 30000 });
  check(buy.status === 'FILLED', `buy ${JSON.stringify(buy)}`);
  const q = await b.getOrder({ symbol: 'BTCUSDT', orderId: sell.orderId });
  check(q.status === 'PARTIALLY_FILLED', `query ${JSON.stringify(q)}`);
  const c = await b.cancelOrder({ symbol: 'BTCUSDT', orderId: sell.orderId });
  check(c.status === 'CANCELED', `cancel ${JSON.stringify(c)}`);
  let second = null;
  try {
    await b.cancelOrder({ symbol: 'BTCUSDT', orderId: sell.orderId });
  } catch (e) {
    second = e;
  }
  check(second && second.code === -2011, `second cancel ${JSON.stringify(second)}`);
  const acct = await a.getAccountInformation();
  const btc = acct.balances.find((x) => x.asset === 'BTC');
  check(btc.free === '0.00099900', `A BTC ${JSON.stringify(btc)}`);
  const mine = await a.getAccountTradeList({ symbol: 'BTCUSDT' });
  check(mine.length === 1 && mine[0].isBuyer, `my trades ${JSON.stringify(mine)}`);
  step('REST done');

  // Streams, then orders over the WebSocket API.
  const msgs = [];
  const ws = new WebsocketClient({ wsUrl }, silent);
  ws.on('message', (m) => msgs.push(m));
  const subsBefore = await gauge(base, 'mx_websocket_subscriptions');
  ws.subscribe(['btcusdt@trade', 'btcusdt@depth@100ms'], 'main');
  const end = Date.now() + DEADLINE_MS;
  while ((await gauge(base, 'mx_websocket_subscriptions')) < subsBefore + 2) {
    check(Date.now() < end, 'stream subscriptions');
    await new Promise((r) => setTimeout(r, 20));
  }
  const snap = await a.getOrderBook({ symbol: 'BTCUSDT', limit: 100 });
  // Signed WS API requests carry their own timestamp (this library signs
  // them with HMAC keys but, as its docs say, leaves the timestamp to us).
  const api = (key, secret) => new WebsocketAPIClient({ api_key: key, api_secret: secret, wsUrl }, silent);
  const wa = api(keyA, secA);
  const wb = api(keyB, secB);
  const userMsgs = [];
  wa.getWSClient().on('message', (m) => userMsgs.push(m));
  try {
    await wa.subscribeUserDataStream('mainWSAPI');
    const ws_sell = (await wb.submitNewSpotOrder({ symbol: 'BTCUSDT', side: 'SELL', type: 'LIMIT', timeInForce: 'GTC', quantity: '0.003', price: '31000', timestamp: Date.now() })).result;
    check(ws_sell.status === 'NEW', `ws sell ${JSON.stringify(ws_sell)}`);
    const ws_buy = (await wa.submitNewSpotOrder({ symbol: 'BTCUSDT', side: 'BUY', type: 'LIMIT', timeInForce: 'IOC', quantity: '0.001', price: '31000', timestamp: Date.now() })).result;
    check(ws_buy.status === 'FILLED', `ws buy ${JSON.stringify(ws_buy)}`);
    const st = (await wb.getSpotOrderStatus({ symbol: 'BTCUSDT', orderId: ws_sell.orderId, timestamp: Date.now() })).result;
    check(st.status === 'PARTIALLY_FILLED', `ws order.status ${JSON.stringify(st)}`);
    step('orders placed over the WebSocket API');

    const data = (m) => (m && m.data ? m.data : m);
    const trade = (await until(msgs, 'the trade event', (ms) => ms.map(data).find((m) => m.e === 'trade')));
    check(trade.p === '31000.00000000' && trade.q === '0.00100000', `trade ${JSON.stringify(trade)}`);
    await until(msgs, "the diff with the sell's remainder", (ms) =>
      ms.map(data).find((m) => m.e === 'depthUpdate' && m.a.some((l) => l[0] === '31000.00000000' && l[1] === '0.00200000')));
    let last = snap.lastUpdateId;
    const kept = msgs.map(data).filter((m) => m.e === 'depthUpdate' && m.u > last);
    check(kept.length > 0 && kept[0].U <= last + 1 && last + 1 <= kept[0].u, `first diff ${JSON.stringify(kept[0])} spans ${last + 1}`);
    kept.forEach((d, i) => {
      check(i === 0 || d.U === last + 1, `gap before ${JSON.stringify(d)} (last u ${last})`);
      last = d.u;
    });
    const ev = (m) => (m && m.event ? m.event : m);
    await until(userMsgs, "A's FILLED executionReport", (ms) =>
      ms.map(ev).find((m) => m.e === 'executionReport' && m.X === 'FILLED'));
    const executions = userMsgs.map(ev).filter((m) => m.e === 'executionReport');
    check(JSON.stringify(executions.map((m) => m.x)) === '["NEW","TRADE"]', `executionReports ${JSON.stringify(executions)}`);
    check(executions[1].i === ws_buy.orderId && executions[1].t === trade.t, `fill report ${JSON.stringify(executions[1])}`);
    console.log('binance node: ok');
    console.log('SUMMARY ' + JSON.stringify({ trade, diffs: kept.length, last_u: last, executions, sell_order_id: ws_sell.orderId }));
  } finally {
    ws.closeAll();
    wa.disconnectAll();
    wb.disconnectAll();
  }
}

main().then(
  () => { step('done'); process.exit(0); },
  (e) => { console.error(e && e.stack ? e.stack : JSON.stringify(e, null, 1)); process.exit(1); },
);

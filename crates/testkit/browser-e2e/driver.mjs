// Drives Debian's headless Chromium (/usr/bin/chromium) with playwright-core for Portcullis's
// browser tests. Never downloads a browser: the executable is given (default /usr/bin/chromium,
// or $TESTKIT_CHROMIUM).
//
// Two ways to run it (see crates/testkit/README.md, "Headless Chromium"):
//
//   node driver.mjs                       JSON lines: one request per stdin line, one answer per
//                                         stdout line ({"id", "ok", "result"} or {"id", "ok":
//                                         false, "error": {"name", "message", "stack"}}); the
//                                         browser closes and the driver exits when stdin closes.
//   node driver.mjs --scenario FILE|-     runs one scenario ({"launch": {...}, "url"?, "steps":
//                                         [...]}) and prints its JSON result; exit 0 when ok.
//
// stdout carries nothing but answers; diagnostics go to stderr.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const DRIVER_VERSION = 1;
const DEFAULT_EXECUTABLE = process.env.TESTKIT_CHROMIUM || '/usr/bin/chromium';
// What works on this machine (root, no GPU, no network but loopback). Playwright adds --headless
// and its own switches; a fresh --user-data-dir comes from launchPersistentContext.
const BASE_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Reporting API (`report-to`) uploads after ~100 ms instead of about a minute.
  '--short-reporting-delay',
];
const DEFAULT_TIMEOUT_MS = 10_000;
// Bounds on what is kept, so a runaway page cannot grow the answer without end.
const MAX_RECORDS = 2000;
const MAX_TEXT = 4096;

const log = (...args) => process.stderr.write(`${args.join(' ')}\n`);
const clip = (s, n = MAX_TEXT) =>
  typeof s === 'string' && s.length > n ? `${s.slice(0, n)}…[${s.length - n} more]` : s;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function errorJson(e) {
  if (e instanceof Error) {
    return { name: e.name, message: e.message, stack: clip(e.stack ?? '', 8192) };
  }
  return { name: 'Error', message: String(e), stack: '' };
}

// Every name but loopback fails to resolve (no accidental traffic off the machine); `hosts` maps
// extra names (e.g. a second "site") to loopback addresses.
function hostResolverRules(hosts, allowExternalHosts) {
  const rules = Object.entries(hosts ?? {}).map(([name, ip]) => `MAP ${name} ${ip}`);
  if (!allowExternalHosts) {
    rules.push('MAP * ~NOTFOUND', 'EXCLUDE localhost', 'EXCLUDE 127.0.0.1');
  }
  return rules.length ? [`--host-resolver-rules=${rules.join(', ')}`] : [];
}

// Runs in every document before its own scripts (CDP, so the page's CSP does not apply) and
// reports `securitypolicyviolation` events through the exposed binding.
const VIOLATION_LISTENER = `(() => {
  addEventListener('securitypolicyviolation', (e) => {
    try {
      globalThis.__testkitCspViolation({
        documentURI: e.documentURI, blockedURI: e.blockedURI,
        violatedDirective: e.violatedDirective, effectiveDirective: e.effectiveDirective,
        disposition: e.disposition, sample: e.sample, sourceFile: e.sourceFile,
        lineNumber: e.lineNumber, statusCode: e.statusCode,
      });
    } catch (_) { /* binding gone during teardown */ }
  }, true);
})();`;

function freshRecords() {
  return { console: [], pageErrors: [], requests: [], cspViolations: [], dialogs: [] };
}

function push(list, item) {
  if (list.length < MAX_RECORDS) list.push(item);
}

class Driver {
  constructor() {
    this.context = null;
    this.page = null;
    this.userDataDir = null;
    this.records = freshRecords();
    this.requestIds = new WeakMap();
    this.nextRequestId = 1;
    this.pending = new Set();
    this.timeoutMs = DEFAULT_TIMEOUT_MS;
    this.version = null;
  }

  track(promise) {
    this.pending.add(promise);
    promise.finally(() => this.pending.delete(promise));
  }

  requestRecord(request) {
    let rec = this.requestIds.get(request);
    if (!rec) {
      let postData = null;
      try {
        postData = clip(request.postData());
      } catch (_) {
        postData = null;
      }
      rec = {
        id: this.nextRequestId++,
        url: request.url(),
        method: request.method(),
        resourceType: request.resourceType(),
        navigation: request.isNavigationRequest(),
        fromServiceWorker: Boolean(request.serviceWorker()),
        postData,
        status: null,
        statusText: null,
        responseHeaders: null,
        failure: null,
        finished: false,
      };
      this.requestIds.set(request, rec);
      push(this.records.requests, rec);
    }
    return rec;
  }

  watchPage(page) {
    page.on('console', (m) => {
      const loc = m.location() ?? {};
      push(this.records.console, {
        type: m.type(),
        text: clip(m.text()),
        url: loc.url ?? '',
        line: loc.lineNumber ?? 0,
        pageUrl: page.url(),
      });
    });
    page.on('pageerror', (e) => push(this.records.pageErrors, { ...errorJson(e), pageUrl: page.url() }));
    page.on('dialog', (d) => {
      push(this.records.dialogs, { type: d.type(), message: clip(d.message()), pageUrl: page.url() });
      d.dismiss().catch(() => {});
    });
  }

  async launch(opts = {}) {
    if (this.context) throw new Error('already launched');
    const executablePath = opts.executablePath || DEFAULT_EXECUTABLE;
    if (!fs.existsSync(executablePath)) {
      throw new Error(
        `Chromium not found at ${executablePath}: install Debian's package (apt-get install chromium; scripts/test.sh does it) or set TESTKIT_CHROMIUM`,
      );
    }
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'testkit-chromium-'));
    const args = [
      ...BASE_ARGS,
      ...hostResolverRules(opts.hosts, opts.allowExternalHosts),
      ...(opts.args ?? []),
    ];
    const started = Date.now();
    this.context = await chromium.launchPersistentContext(this.userDataDir, {
      executablePath,
      headless: true,
      args,
      timeout: opts.launchTimeoutMs ?? 30_000,
      ignoreHTTPSErrors: Boolean(opts.ignoreHttpsErrors),
      serviceWorkers: opts.blockServiceWorkers ? 'block' : 'allow',
      viewport: { width: 1024, height: 768 },
      locale: 'en-US',
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    this.context.setDefaultTimeout(this.timeoutMs);
    this.context.setDefaultNavigationTimeout(this.timeoutMs);
    await this.context.exposeBinding('__testkitCspViolation', (source, v) => {
      push(this.records.cspViolations, { ...v, frameUrl: source.frame?.url() ?? '' });
    });
    await this.context.addInitScript({ content: VIOLATION_LISTENER });
    for (const pattern of opts.blockUrls ?? []) {
      await this.context.route(pattern, (route) => route.abort('blockedbyclient'));
    }
    this.context.on('request', (r) => this.requestRecord(r));
    this.context.on('response', (resp) => {
      const rec = this.requestRecord(resp.request());
      rec.status = resp.status();
      rec.statusText = resp.statusText();
      const p = resp
        .allHeaders()
        .then((h) => {
          rec.responseHeaders = h;
        })
        .catch(() => {
          rec.responseHeaders = resp.headers();
        });
      this.track(p);
    });
    this.context.on('requestfinished', (r) => {
      this.requestRecord(r).finished = true;
    });
    this.context.on('requestfailed', (r) => {
      const rec = this.requestRecord(r);
      rec.failure = r.failure()?.errorText ?? 'failed';
    });
    this.context.on('page', (p) => this.watchPage(p));
    for (const p of this.context.pages()) this.watchPage(p);
    this.page = this.context.pages()[0] ?? (await this.context.newPage());
    this.version = this.context.browser()?.version() ?? null;
    return {
      driver: DRIVER_VERSION,
      version: this.version,
      executablePath,
      userDataDir: this.userDataDir,
      args,
      launchMs: Date.now() - started,
    };
  }

  requirePage() {
    if (!this.page) throw new Error('no browser: send {"op":"launch"} first');
    return this.page;
  }

  // `expression` is a JavaScript expression evaluated in the page's main world (through the
  // DevTools protocol: the page's CSP does not apply to it, but does to everything it does to
  // the DOM). A function value is called with `arg`; promises are awaited.
  async evaluate(expression, arg) {
    const page = this.requirePage();
    const src = String(expression).trim().replace(/;+$/, '');
    const wrapped = `(async () => {
      const __testkitValue = (${src}\n);
      return typeof __testkitValue === 'function'
        ? await __testkitValue(${JSON.stringify(arg ?? null)})
        : await __testkitValue;
    })()`;
    return page.evaluate(wrapped);
  }

  // Polls `expression` (as `evaluate` does, every `pollingMs`, default 50) until its value is
  // truthy; returns that value. Playwright's own waitForFunction evaluates a string predicate with
  // eval() inside the page, which a CSP without 'unsafe-eval' blocks (and reports).
  async waitForFunction({ expression, arg, timeoutMs, pollingMs }) {
    const limit = timeoutMs ?? this.timeoutMs;
    const deadline = Date.now() + limit;
    let last;
    for (;;) {
      try {
        last = await this.evaluate(expression, arg);
        if (last) return last;
      } catch (e) {
        // A navigation in progress destroys the context; try again until the deadline.
        last = `threw: ${e.message.split('\n')[0]}`;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${limit} ms waiting for ${clip(String(expression), 300)} (last value: ${clip(JSON.stringify(last) ?? 'undefined', 300)})`,
        );
      }
      await sleep(pollingMs ?? 50);
    }
  }

  async settle() {
    await Promise.allSettled([...this.pending]);
  }

  async report({ clear = false } = {}) {
    await this.settle();
    const page = this.page;
    let title = null;
    try {
      title = page ? await page.title() : null;
    } catch (_) {
      title = null;
    }
    const out = { url: page ? page.url() : null, title, ...this.records };
    // Deep copy so later events do not change what was sent.
    const copy = JSON.parse(JSON.stringify(out));
    if (clear) this.records = freshRecords();
    return copy;
  }

  // Polls the records until `count` entries of `kind` match every field of `match` (strings:
  // substring match; other values: equality).
  async waitForRecord({ kind, match = {}, count = 1, timeoutMs }) {
    if (!(kind in this.records)) throw new Error(`unknown record kind ${kind}`);
    const deadline = Date.now() + (timeoutMs ?? this.timeoutMs);
    const matches = (rec) =>
      Object.entries(match).every(([k, v]) =>
        typeof v === 'string' && typeof rec[k] === 'string' ? rec[k].includes(v) : rec[k] === v,
      );
    for (;;) {
      const found = this.records[kind].filter(matches);
      if (found.length >= count) {
        await this.settle();
        return JSON.parse(JSON.stringify(found));
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs ?? this.timeoutMs} ms waiting for ${count} ${kind} record(s) matching ${JSON.stringify(match)} (have ${found.length})`,
        );
      }
      await sleep(25);
    }
  }

  async op(req) {
    const t = req.timeoutMs;
    switch (req.op) {
      case 'launch':
        return this.launch(req.options ?? {});
      case 'goto': {
        const resp = await this.requirePage().goto(req.url, {
          waitUntil: req.waitUntil ?? 'load',
          timeout: t,
        });
        return {
          url: this.page.url(),
          status: resp ? resp.status() : null,
          headers: resp ? await resp.allHeaders() : null,
        };
      }
      case 'reload': {
        const resp = await this.requirePage().reload({ waitUntil: req.waitUntil ?? 'load', timeout: t });
        return { url: this.page.url(), status: resp ? resp.status() : null };
      }
      case 'evaluate':
        return this.evaluate(req.expression, req.arg);
      case 'waitForFunction':
        return this.waitForFunction(req);
      case 'waitForSelector': {
        const h = await this.requirePage().waitForSelector(req.selector, { state: req.state ?? 'visible', timeout: t });
        await h?.dispose().catch(() => {});
        return true;
      }
      case 'waitForURL':
        await this.requirePage().waitForURL(
          req.regex ? new RegExp(req.regex) : req.url,
          { timeout: t, waitUntil: req.waitUntil ?? 'load' },
        );
        return this.page.url();
      case 'waitForLoadState':
        await this.requirePage().waitForLoadState(req.state ?? 'load', { timeout: t });
        return true;
      case 'click':
        await this.requirePage().click(req.selector, { timeout: t });
        return true;
      case 'fill':
        await this.requirePage().fill(req.selector, String(req.value ?? ''), { timeout: t });
        return true;
      case 'press':
        await this.requirePage().press(req.selector, req.key, { timeout: t });
        return true;
      case 'content':
        return this.requirePage().content();
      case 'title':
        return this.requirePage().title();
      case 'url':
        return this.requirePage().url();
      case 'cookies':
        return this.context.cookies(req.urls ?? []);
      case 'newPage':
        this.page = await this.context.newPage();
        return this.context.pages().indexOf(this.page);
      case 'selectPage': {
        const p = this.context.pages()[req.index];
        if (!p) throw new Error(`no page ${req.index} (have ${this.context.pages().length})`);
        this.page = p;
        return req.index;
      }
      case 'sleep':
        await sleep(Math.min(Number(req.ms ?? 0), 60_000));
        return true;
      case 'waitForRecord':
        return this.waitForRecord(req);
      case 'report':
        return this.report({ clear: Boolean(req.clear) });
      case 'scenario':
        return this.scenario(req);
      case 'close':
        await this.close();
        return true;
      default:
        throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    }
  }

  // Steps run in order; a step's value is kept under its `name`. A step that throws ends the
  // scenario (ok: false) unless it says `expectError: true`, in which case its error is its value
  // ({"error": {"name", "message"}}) and a step that does NOT throw ends it instead.
  async scenario({ url, steps = [] }) {
    const all = url ? [{ op: 'goto', url }, ...steps] : steps;
    const values = {};
    const results = [];
    let ok = true;
    let error = null;
    const started = Date.now();
    for (const [i, step] of all.entries()) {
      if (step.op === 'scenario' || step.op === 'launch' || step.op === 'close') {
        ok = false;
        error = `step ${i}: op ${step.op} is not allowed in a scenario`;
        break;
      }
      const t0 = Date.now();
      try {
        const value = await this.op(step);
        if (step.expectError) {
          ok = false;
          error = `step ${i} (${step.name ?? step.op}) was expected to throw but returned ${clip(JSON.stringify(value) ?? 'undefined', 500)}`;
          results.push({ op: step.op, name: step.name ?? null, ok: false, ms: Date.now() - t0, value });
          break;
        }
        if (step.name) values[step.name] = value ?? null;
        results.push({ op: step.op, name: step.name ?? null, ok: true, ms: Date.now() - t0 });
      } catch (e) {
        const err = errorJson(e);
        if (step.expectError) {
          if (step.name) values[step.name] = { error: { name: err.name, message: err.message } };
          results.push({ op: step.op, name: step.name ?? null, ok: true, ms: Date.now() - t0, error: err });
          continue;
        }
        ok = false;
        error = `step ${i} (${step.name ?? step.op}) failed: ${err.message}`;
        results.push({ op: step.op, name: step.name ?? null, ok: false, ms: Date.now() - t0, error: err });
        break;
      }
    }
    return { ok, error, values, steps: results, ms: Date.now() - started, report: await this.report() };
  }

  async close() {
    const ctx = this.context;
    this.context = null;
    this.page = null;
    if (ctx) {
      await Promise.race([ctx.close().catch(() => {}), sleep(10_000)]);
    }
    if (this.userDataDir) {
      fs.rmSync(this.userDataDir, { recursive: true, force: true, maxRetries: 3 });
      this.userDataDir = null;
    }
  }
}

function send(msg) {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

async function serve() {
  const driver = new Driver();
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  const shutdown = async (why) => {
    log(`driver: ${why}: closing the browser`);
    // A hung close must not keep the process (and its browser) alive.
    setTimeout(() => process.exit(0), 15_000).unref();
    await chain.catch(() => {});
    await driver.close();
    process.exit(0);
  };
  rl.on('line', (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let req;
      try {
        req = JSON.parse(line);
      } catch (e) {
        send({ id: null, ok: false, error: errorJson(e) });
        return;
      }
      try {
        const result = await driver.op(req);
        send({ id: req.id ?? null, ok: true, result: result ?? null });
      } catch (e) {
        send({ id: req.id ?? null, ok: false, error: errorJson(e) });
      }
      if (req.op === 'close') process.exit(0);
    });
  });
  rl.on('close', () => shutdown('stdin closed'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

async function oneShot(file) {
  const text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
  const scenario = JSON.parse(text);
  const driver = new Driver();
  let result;
  try {
    const launched = await driver.launch(scenario.launch ?? {});
    result = { launched, ...(await driver.scenario(scenario)) };
  } catch (e) {
    result = { ok: false, error: errorJson(e).message };
  } finally {
    await driver.close();
  }
  send(result);
  process.exit(result.ok ? 0 : 1);
}

const i = process.argv.indexOf('--scenario');
if (i !== -1) {
  await oneShot(process.argv[i + 1] ?? '-');
} else {
  await serve();
}

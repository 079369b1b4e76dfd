// Billing Settings page: loads /billing/status (or, back from Stripe's portal or a checkout,
// POST /billing/refresh, which re-reads Stripe first), renders one of the <template>s in
// billing.html, opens the Stripe Customer Portal, and, for an unpaid user, lists the offered plans
// (GET /billing/plans) and opens Stripe Checkout for one (POST /billing/create-checkout). Plain ES2020, no dependencies; the page runs under a strict
// CSP, so all markup comes from templates and all text is set with textContent (never innerHTML).
(() => {
  'use strict';

  const TOKEN_KEY = 'billing_token';
  const STATUS_TIMEOUT_MS = 15000;   // a hung request must end in the error state, not an endless skeleton
  const PORTAL_TIMEOUT_MS = 20000;
  const REFRESH_TIMEOUT_MS = 30000;  // the service may wait on Stripe, and on another read of it
  const STALE_AFTER_MS = 30000;      // refresh when the tab comes back after this long
  const FALLBACK_ERROR = 'Something went wrong. Please try again.';
  const STATUS_WORDS = {
    active: 'Active', trialing: 'Trialing', past_due: 'Past due', canceled: 'Canceled',
    unpaid: 'Unpaid', incomplete: 'Incomplete', incomplete_expired: 'Incomplete (expired)', paused: 'Paused',
  };
  const STATUS_TONES = { active: 'success', trialing: 'success', past_due: 'warning', unpaid: 'warning', incomplete: 'warning', paused: 'warning' };

  let root;                  // <main id="billing">
  const templates = {};      // state -> DocumentFragment, detached from the document
  let memoryToken = null;    // used when sessionStorage is unavailable (private modes, sandboxed frames)
  let loadSeq = 0;           // only the newest status request may render
  let loadController = null;
  let lastLoadedAt = 0;
  let portalPending = false; // true from the click until the request fails (or we navigate away)
  let offeredToken = null;   // from a #token= link, until it is adopted or turned down
  let refreshOnLoad = false; // back from Stripe (?from=portal): the first load re-reads Stripe
  let checkoutSession = null; // back from Checkout (?from=checkout&session_id=cs_…): the session to apply

  // --- Authentication --------------------------------------------------------------------------

  // The page speaks for the app's session cookie (HttpOnly: the page never sees it), or for a token
  // kept for this tab. An app that keeps tokens in the browser hands one over as #token=<jwt>.
  //
  // A token in a URL is a claim by whoever made the link, so it never replaces a session
  // silently: it leaves the address bar at once (no history, bookmarks or screenshots), the server
  // says whom it names, and it is adopted only when there is no session yet or the session is the
  // same user's. For another user the page asks, and keeps the session unless the reader chooses
  // to switch. A tab token is sent without the cookie, so no request carries two identities (the
  // server refuses those as ambiguous).
  function takeFragmentToken() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const token = params.get('token');
    if (!token) return null;
    params.delete('token');
    const rest = params.toString();
    history.replaceState(history.state, '', window.location.pathname + window.location.search + (rest ? '#' + rest : ''));
    return token;
  }

  // Stripe sends the user back with ?from=portal (a checkout with ?from=checkout): what they just
  // changed may not have reached the service by webhook yet, so the first load asks it to read
  // Stripe. The marker stays in the address bar until that answer, then leaves it, so a reload
  // does not read Stripe again.
  function returnedFromStripe() {
    const from = new URLSearchParams(window.location.search).get('from');
    return from === 'portal' || from === 'checkout';
  }

  // Back from Checkout, Stripe names the session (`session_id`, its {CHECKOUT_SESSION_ID}): the
  // service reads that very session, so the page is right before its webhooks arrive.
  function returnedCheckoutSession() {
    const params = new URLSearchParams(window.location.search);
    const session = params.get('session_id');
    return params.get('from') === 'checkout' && session && /^cs_[A-Za-z0-9_]+$/.test(session) ? session : null;
  }

  function dropReturnMarker() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has('from') && !url.searchParams.has('session_id')) return;
    url.searchParams.delete('from');
    url.searchParams.delete('session_id');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch (_) { return memoryToken; }
  }

  function keepToken(token) {
    memoryToken = token;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* memoryToken still works */ }
  }

  function forgetToken() {
    memoryToken = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing stored */ }
  }

  // --- HTTP ------------------------------------------------------------------------------------

  // X-Requested-With is the server's CSRF check for cookie-authenticated requests; cross-site
  // forms cannot set custom headers, so every request carries it.
  // `token`: the bearer token to send (default: this tab's), or null for the cookie alone.
  function request(url, { method = 'GET', body, timeoutMs, signal, token = storedToken() } = {}) {
    const headers = { 'Accept': 'application/json', 'X-Requested-With': 'billing-portal' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers['Authorization'] = 'Bearer ' + token;

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    if (signal) signal.addEventListener('abort', () => controller.abort(), { once: true });
    return fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: token ? 'omit' : 'same-origin', // a bearer token speaks alone
      cache: 'no-store', // coming back from the portal must never show a cached status
      signal: controller.signal,
    }).finally(() => clearTimeout(timer));
  }

  async function readJson(response) {
    try { return await response.json(); } catch (_) { return null; }
  }

  // --- Rendering -------------------------------------------------------------------------------

  function announce(message) {
    const region = document.getElementById('billing-announcer');
    if (!region) return;
    // Clearing first makes screen readers repeat a message that equals the previous one.
    region.textContent = '';
    setTimeout(() => { region.textContent = message; }, 50);
  }

  // Demo mode (only with the local Stripe emulator): the server flips this meta tag.
  function demoMode() {
    return document.querySelector('meta[name="billing-demo"]')?.content === 'on';
  }

  function render(state, fill) {
    const content = templates[state].cloneNode(true);
    if (!demoMode()) content.querySelectorAll('[data-demo]').forEach((el) => el.remove());
    if (fill) fill(content);
    root.replaceChildren(content);
    root.dataset.state = state;
    root.setAttribute('aria-busy', String(state === 'loading'));
  }

  function identityText(data) {
    return data.email ? data.email + ' (' + data.userId + ')' : data.userId;
  }

  // Who, and for an organisation which one: what a link for another organisation would switch.
  function accountText(data) {
    const org = data.account && data.account.type === 'organization' ? data.account : null;
    return org ? identityText(data) + ' for ' + (org.name || org.id) : identityText(data);
  }

  // The header lines naming who is signed in and, for an organisation, whose billing this is;
  // hidden while no session is known.
  function showIdentity(data) {
    const line = document.getElementById('signed-in-as');
    if (!line) return;
    if (data) line.querySelector('[data-field="identity"]').textContent = identityText(data);
    line.hidden = !data;
    const billingFor = document.getElementById('billing-for');
    const org = data && isOrganization(data) ? data.account : null;
    if (org) billingFor.querySelector('[data-field="account-name"]').textContent = org.name || org.id;
    if (billingFor) billingFor.hidden = !org;
  }

  // The same user acting for the same account (their own, or one organisation): a link for another
  // organisation is a switch, asked about like one for another user.
  function sameAccount(a, b) {
    const key = (d) => (d.account ? d.account.type + ':' + d.account.id : '');
    return a.userId === b.userId && key(a) === key(b);
  }

  function isOrganization(data) {
    return Boolean(data.account) && data.account.type === 'organization';
  }

  // Whether the signed-in user may open the portal and subscribe: an organisation's billing is
  // managed only by the roles the service names (account.managerRoles).
  function canManage(data) {
    return !data.account || data.account.canManage !== false;
  }

  // For a member who cannot manage: no portal or Subscribe buttons (the server would answer 403),
  // and whom to ask instead.
  function keepManagersOnly(node, data) {
    if (canManage(data)) return;
    node.querySelectorAll('[data-portal-actions], [data-manager-only], [data-plans]').forEach((el) => el.remove());
    const roles = (data.account.managerRoles || []).join(' or ') || 'a billing manager';
    const name = data.account.name || data.account.id;
    setField(node, 'managers', 'Only members with the role ' + roles + ' of ' + name + ' can manage its billing. Ask one of them to make changes.');
    node.querySelector('[data-field="managers"]').hidden = false;
  }

  function showNotice(text) {
    const notice = document.getElementById('session-notice');
    if (!notice) return;
    notice.textContent = text || '';
    notice.hidden = !text;
  }

  function setField(scope, name, text) {
    const el = scope.querySelector('[data-field="' + name + '"]');
    if (!el) return null;
    if (text) el.textContent = text; else el.remove();
    return el;
  }

  function statusWord(status) {
    if (!status) return null;
    return STATUS_WORDS[status] || status.charAt(0).toUpperCase() + status.slice(1).replace(/_/g, ' ');
  }

  function formatDate(value) {
    const date = value ? new Date(value) : null;
    if (!date || Number.isNaN(date.getTime())) return null;
    return date.toLocaleDateString(undefined, { year: 'numeric', month: 'long', day: 'numeric' });
  }

  // What happens next, from the status's own explanation (`reason`): the end date when the
  // subscription is set to end in either billing mode (flexible mode sets only `cancelAt`), the
  // grace deadline after a failed payment, or the renewal date.
  function periodText(data) {
    const ends = formatDate(data.cancelAt);
    if (ends) return 'Ends on ' + ends;
    const graceEnds = formatDate(data.graceEndsAt);
    if (data.reason === 'past_due_in_grace' && graceEnds) {
      return 'Your last payment failed. Update your payment method before ' + graceEnds + ' to keep access.';
    }
    if (data.reason === 'collection_paused') return 'Payment collection is paused.';
    const renews = formatDate(data.currentPeriodEnd);
    return renews && 'Renews on ' + renews;
  }

  // The plan as people say it, "Pro · $29.00 per month", never with a Stripe id: the product's
  // name (the server falls back to the price's nickname) and the price in the reader's locale.
  // Whatever is not known is left out; with nothing known the line is not shown.
  function planText(plan) {
    if (!plan || typeof plan !== 'object') return null;
    const name = typeof plan.name === 'string' && plan.name.trim() ? plan.name.trim() : null;
    const money = moneyText(plan.amount, plan.currency);
    const every = money && intervalText(plan.interval, plan.intervalCount);
    return [name, every ? money + ' ' + every : money].filter(Boolean).join(' · ') || null;
  }

  // `amount` is in the currency's smallest unit, as Stripe counts it (2900 USD cents, 500 yen):
  // the currency's own number of decimals, which Intl knows (2 for USD, 0 for JPY, 3 for KWD),
  // turns it into the amount to show.
  function moneyText(amount, currency) {
    if (!Number.isSafeInteger(amount) || typeof currency !== 'string' || !/^[a-z]{3}$/i.test(currency)) return null;
    const options = { style: 'currency', currency: currency.toUpperCase() };
    let format;
    try {
      format = new Intl.NumberFormat(navigator.language || undefined, options);
    } catch (_) {
      try { format = new Intl.NumberFormat(undefined, options); } catch (_) { return null; } // a code Intl refuses
    }
    return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
  }

  const INTERVAL_WORDS = { day: ['day', 'days'], week: ['week', 'weeks'], month: ['month', 'months'], year: ['year', 'years'] };

  // "per month", "every 3 months"; nothing for a one-time price.
  function intervalText(interval, count) {
    if (typeof interval !== 'string' || !interval) return null;
    const [one, many] = INTERVAL_WORDS[interval] || [interval.replace(/_/g, ' '), interval.replace(/_/g, ' ') + 's'];
    return Number.isSafeInteger(count) && count > 1 ? 'every ' + count + ' ' + many : 'per ' + one;
  }

  const UNPAID_TEXT = {
    past_due_grace_ended: 'Your payment failed and the grace period has ended. Update your payment method to restore access.',
    collection_paused: 'Payment collection is paused, so this plan does not include access right now.',
  };

  // Shown with a stored status the page fell back to: the refresh could not confirm it with Stripe.
  function keepRefreshNotice(node, stale) {
    if (!stale) node.querySelector('#refresh-notice')?.remove();
  }

  const STALE_ANNOUNCEMENT = ' Could not confirm the latest changes with Stripe; showing the last known state.';

  function renderPaid(data, stale = false) {
    render('paid', (node) => {
      keepRefreshNotice(node, stale);
      // paid with no status should not happen, but access is granted, so "Active" is the truth.
      const badge = setField(node, 'status', statusWord(data.status) || 'Active');
      badge.parentElement.dataset.tone = STATUS_TONES[data.status] || (data.status ? 'neutral' : 'success');
      setField(node, 'plan', planText(data.plan));
      setField(node, 'period', periodText(data));
      // Already set to end (cancelAt covers both billing modes): there is nothing left to cancel
      // (the server would say 409).
      if (data.cancelAt) node.querySelector('#cancel-subscription')?.remove();
      keepManagersOnly(node, data);
    });
    announce('Billing status loaded. Subscription ' + (statusWord(data.status) || 'Active').toLowerCase() + '.' + (stale ? STALE_ANNOUNCEMENT : ''));
  }

  function renderSwitch(current, offered) {
    render('confirm-switch', (node) => {
      node.querySelector('[data-field="current-user"]').textContent = accountText(current);
      node.querySelector('[data-field="offered-user"]').textContent = accountText(offered);
    });
    announce('The link you opened would sign you in as ' + accountText(offered) + '. You are still signed in as ' + accountText(current) + '.');
  }

  function renderUnpaid(data, stale = false) {
    render('unpaid', (node) => {
      keepRefreshNotice(node, stale);
      // A former customer (a Stripe customer, nothing that grants access) still has invoices and
      // saved payment methods: "Billing history" opens the portal's home on them.
      const customer = data.hasCustomer === true ? 'former' : 'none';
      node.querySelectorAll('[data-customer]').forEach((el) => {
        if (el.dataset.customer !== customer) el.remove();
      });
      const word = statusWord(data.status);
      setField(node, 'last-status', UNPAID_TEXT[data.reason] || (word && 'Your last subscription is ' + word.toLowerCase() + '.'));
      keepManagersOnly(node, data);
    });
    announce('No active subscription.' + (stale ? STALE_ANNOUNCEMENT : ''));
  }

  // --- Status ----------------------------------------------------------------------------------

  function isStatus(data) {
    return Boolean(data) && typeof data.paid === 'boolean' && typeof data.userId === 'string';
  }

  // One status read: {kind: 'ok', data, stale} | {kind: 'signed-out'} | {kind: 'error'}.
  // With `refresh`, the service re-reads Stripe first (POST /billing/refresh). When it cannot (asked
  // again too soon, Stripe failing), its error still carries the stored status as `data`: that is
  // shown, marked stale. A refresh that brings no status at all (network, timeout) falls back to
  // the plain read.
  async function readStatus(token, signal, refresh = false) {
    try {
      const refreshBody = refresh && checkoutSession ? { checkoutSessionId: checkoutSession } : undefined;
      const response = refresh
        ? await request('/billing/refresh', { method: 'POST', body: refreshBody, timeoutMs: REFRESH_TIMEOUT_MS, signal, token })
        : await request('/billing/status', { timeoutMs: STATUS_TIMEOUT_MS, signal, token });
      if (response.status === 401) return { kind: 'signed-out' };
      const body = await readJson(response);
      const data = body && body.data;
      if (isStatus(data)) return { kind: 'ok', data, stale: !response.ok };
    } catch (_) {
      // Network failure, timeout or abort: the error state (unless superseded).
    }
    if (!refresh || signal?.aborted) return { kind: 'error' };
    const stored = await readStatus(token, signal);
    return stored.kind === 'ok' ? { ...stored, stale: true } : stored;
  }

  // The session the page speaks for now. A tab token the server no longer takes (expired) is
  // dropped, so it cannot hide the app's live cookie session.
  async function readSession(signal, refresh) {
    const token = storedToken();
    const result = await readStatus(token, signal, refresh);
    if (!token || result.kind !== 'signed-out') return result;
    forgetToken();
    return readStatus(null, signal, refresh);
  }

  async function loadStatus({ focus = false } = {}) {
    const seq = ++loadSeq;
    const refresh = refreshOnLoad; // once per return from Stripe
    refreshOnLoad = false;
    if (loadController) loadController.abort();
    loadController = new AbortController();
    const signal = loadController.signal;
    render('loading');
    showIdentity(null);
    showNotice(null);
    announce('Loading billing status…');

    // Back from Stripe, the loading state stays until the refresh answers: the stored status may
    // be the one the user just changed, and must not flash first.
    let result = await readSession(signal, refresh);
    if (refresh) { dropReturnMarker(); checkoutSession = null; }
    if (seq !== loadSeq) return; // a newer load owns the page now

    // A link's token is weighed against the session once both are known; after an error it waits
    // for "Try again".
    const offered = offeredToken;
    if (offered && result.kind !== 'error') {
      const claim = await readStatus(offered, signal);
      if (seq !== loadSeq) return;
      if (claim.kind === 'signed-out') {
        offeredToken = null;
        showNotice('The sign-in link you opened is invalid or has expired, so it was not used.');
      } else if (claim.kind === 'error') {
        result = claim;
      } else if (result.kind === 'signed-out' || sameAccount(claim.data, result.data)) {
        offeredToken = null;
        keepToken(offered);
        if (refresh && result.kind === 'signed-out') {
          // Without a session nothing was refreshed yet: the link's user is the one back from Stripe.
          const fresh = await readStatus(offered, signal, true);
          if (seq !== loadSeq) return;
          result = fresh.kind === 'ok' ? fresh : claim;
        } else {
          result = { ...claim, stale: result.kind === 'ok' && result.stale };
        }
      } else {
        lastLoadedAt = Date.now();
        showIdentity(result.data);
        renderSwitch(result.data, claim.data); // offeredToken waits for the reader's choice
        if (focus) root.querySelector('.card-title')?.focus();
        return;
      }
    }

    lastLoadedAt = Date.now();
    showIdentity(result.kind === 'ok' ? result.data : null);
    if (result.kind === 'ok' && result.data.paid) renderPaid(result.data, result.stale);
    else if (result.kind === 'ok') {
      renderUnpaid(result.data, result.stale);
      if (hasEndedOrNone(result.data) && canManage(result.data)) loadPlans(seq, signal);
      else showFixSubscription();
    }
    else if (result.kind === 'signed-out') { render('signed-out'); announce('You are signed out.'); }
    else { render('error'); announce(''); } // the error card is role="alert" and speaks for itself

    // After "Try again" the clicked button is gone; put keyboard focus somewhere meaningful.
    if (focus) root.querySelector('.card-title')?.focus();
  }

  // --- Portal ----------------------------------------------------------------------------------

  function setButtonBusy(button, busy, busyLabel = 'Opening portal…') {
    const label = button.querySelector('.btn-label') || button;
    if (busy) {
      button.dataset.idleLabel = label.textContent;
      label.textContent = busyLabel;
    } else if (button.dataset.idleLabel) {
      label.textContent = button.dataset.idleLabel;
    }
    button.disabled = busy;
    button.setAttribute('aria-disabled', String(busy));
    button.setAttribute('aria-busy', String(busy));
  }

  function clearPortalError() {
    document.getElementById('portal-error')?.remove();
  }

  function showPortalError(button, message) {
    clearPortalError();
    const p = document.createElement('p');
    p.id = 'portal-error';
    p.className = 'inline-error';
    p.setAttribute('role', 'alert');
    p.textContent = message;
    // Under a plan, inside its list item (a <ul> holds only items); else after the buttons.
    const plan = button.closest('[data-checkout-actions]');
    if (plan) plan.append(p);
    else (button.closest('[data-portal-actions]') || button).after(p);
  }

  // Only http(s) URLs may be followed: a tampered response must not become a javascript: URL.
  function portalUrlOf(body) {
    try {
      const url = new URL(body.data.portalUrl);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (_) { return null; }
  }

  // One handler for every portal button: Manage Subscription posts {}, later buttons post e.g.
  // {flow: 'payment_method_update'} to deep-link into a portal flow.
  async function openPortal(button, options = {}) {
    if (portalPending) return; // no double submit, also across different portal buttons
    portalPending = true;
    clearPortalError();
    setButtonBusy(button, true);
    announce('Opening the billing portal…');

    let message = FALLBACK_ERROR;
    try {
      const response = await request('/billing/create-portal', { method: 'POST', body: options, timeoutMs: PORTAL_TIMEOUT_MS });
      const body = await readJson(response);
      const url = response.ok && body ? portalUrlOf(body) : null;
      if (url) {
        // Stay busy while the browser leaves; pageshow resets everything if we come back via bfcache.
        window.location.assign(url);
        return;
      }
      if (!response.ok && body && typeof body.message === 'string' && body.message.trim()) message = body.message;
    } catch (_) {
      // Network error or timeout: keep the generic message.
    }
    portalPending = false;
    setButtonBusy(button, false);
    showPortalError(button, message);
    button.focus(); // disabling the button dropped focus; give it back so keyboard users keep their place
  }

  // --- Demo (local emulator only) ---------------------------------------------------------------

  async function demoSignIn(button) {
    setButtonBusy(button, true, 'Signing in…');
    forgetToken(); // the demo session is a cookie, which a tab token would hide
    try {
      const response = await request('/demo/sign-in', { method: 'POST', body: {}, timeoutMs: PORTAL_TIMEOUT_MS });
      if (response.ok) { loadStatus({ focus: true }); return; }
    } catch (_) { /* fall through */ }
    setButtonBusy(button, false);
    showPortalError(button, FALLBACK_ERROR);
  }

  // --- Plans and Checkout ----------------------------------------------------------------------

  // The unpaid card's plan list: each offered plan with its price, said as the status says a plan
  // ("Pro · $29.00 per month"), and a Subscribe button; without plans, the contact message.
  // A subscription Stripe has not ended (past due after the grace, unpaid, incomplete, paused)
  // still exists: the service refuses a second one (409 already_subscribed), so instead of plans
  // the page sends the user to the portal ("Billing history") to fix it. Stripe's ended statuses:
  // canceled and incomplete_expired (docs.stripe.com/billing/subscriptions/overview).
  const ENDED_STATUSES = ['canceled', 'incomplete_expired'];

  function hasEndedOrNone(data) {
    return !data.status || ENDED_STATUSES.includes(data.status);
  }

  function showFixSubscription() {
    const note = root.querySelector('[data-plans] [data-field="fix-subscription"]');
    if (note) note.hidden = false;
  }

  async function loadPlans(seq, signal) {
    let plans = null;
    try {
      const response = await request('/billing/plans', { timeoutMs: STATUS_TIMEOUT_MS, signal });
      const body = response.ok ? await readJson(response) : null;
      if (body && body.data && Array.isArray(body.data.plans)) plans = body.data.plans;
    } catch (_) { /* the error line below */ }
    if (seq !== loadSeq || root.dataset.state !== 'unpaid') return;
    const box = root.querySelector('[data-plans]');
    if (!box) return;
    if (!plans) { box.querySelector('[data-field="plans-error"]').hidden = false; return; }
    const offered = plans.filter((plan) => plan && typeof plan.id === 'string');
    if (offered.length === 0) { box.querySelector('[data-field="no-plans"]').hidden = false; return; }
    box.querySelector('[data-field="plans-title"]').hidden = false;
    const list = box.querySelector('[data-field="plan-list"]');
    for (const plan of offered) {
      const item = templates['plan-item'].cloneNode(true);
      const name = typeof plan.name === 'string' && plan.name.trim() ? plan.name.trim() : 'Plan';
      item.querySelector('[data-field="plan-name"]').textContent = name;
      const money = moneyText(plan.amount, plan.currency);
      const every = money && intervalText(plan.interval, plan.intervalCount);
      setField(item, 'plan-price', every ? money + ' ' + every : money);
      const button = item.querySelector('[data-checkout-plan]');
      button.dataset.checkoutPlan = plan.id;
      button.setAttribute('aria-label', 'Subscribe to ' + name);
      list.append(item);
    }
  }

  // Only http(s) URLs may be followed, as for the portal.
  function checkoutUrlOf(body) {
    try {
      const url = new URL(body.data.checkoutUrl);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (_) { return null; }
  }

  // Subscribe: the service creates the Checkout Session (one, even for a double click) and the
  // browser leaves for Stripe's page; busy and error states as the portal buttons'.
  async function startCheckout(button) {
    if (portalPending) return; // one Stripe page at a time, across every button
    portalPending = true;
    clearPortalError();
    setButtonBusy(button, true, 'Opening checkout…');
    announce('Opening checkout…');
    let message = FALLBACK_ERROR;
    try {
      const response = await request('/billing/create-checkout', {
        method: 'POST', body: { plan: button.dataset.checkoutPlan }, timeoutMs: PORTAL_TIMEOUT_MS,
      });
      const body = await readJson(response);
      const url = response.ok && body ? checkoutUrlOf(body) : null;
      if (url) {
        window.location.assign(url);
        return;
      }
      if (!response.ok && body && typeof body.message === 'string' && body.message.trim()) message = body.message;
    } catch (_) {
      // Network error or timeout: keep the generic message.
    }
    portalPending = false;
    setButtonBusy(button, false);
    showPortalError(button, message);
    button.focus();
  }

  // --- Wiring ----------------------------------------------------------------------------------

  function onClick(event) {
    const button = event.target.closest('button');
    if (!button || !root.contains(button)) return;
    if (button.id === 'retry') {
      loadStatus({ focus: true });
    } else if (button.id === 'stay-signed-in') {
      offeredToken = null;
      loadStatus({ focus: true });
    } else if (button.id === 'switch-account') {
      if (offeredToken) keepToken(offeredToken); // the reader chose the link's account
      offeredToken = null;
      loadStatus({ focus: true });
    } else if (button.id === 'demo-sign-in') {
      demoSignIn(button);
    } else if (button.hasAttribute('data-checkout-plan')) {
      startCheckout(button);
    } else if (button.hasAttribute('data-portal-flow')) {
      const flow = button.dataset.portalFlow;
      openPortal(button, flow ? { flow } : {});
    }
  }

  function start() {
    root = document.getElementById('billing');
    // Detach the templates: inert copies of buttons and ids must not sit in the document, where
    // DOM dumps, extensions or duplicate-id checks would see them.
    document.querySelectorAll('template[id^="tpl-"]').forEach((t) => {
      templates[t.id.slice(4)] = t.content;
      t.remove();
    });
    root.addEventListener('click', onClick);
    loadStatus();

    // Back/forward from the portal can restore this page from bfcache with a stale status and a
    // button still saying "Opening portal…": reset and load again.
    window.addEventListener('pageshow', (event) => {
      if (!event.persisted) return;
      portalPending = false;
      loadStatus();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState !== 'visible' || portalPending) return;
      if (root.dataset.state !== 'loading' && Date.now() - lastLoadedAt > STALE_AFTER_MS) loadStatus();
    });
    window.addEventListener('hashchange', () => {
      const token = takeFragmentToken();
      if (token) { offeredToken = token; loadStatus(); }
    });
  }

  offeredToken = takeFragmentToken(); // before anything else: the token leaves the address bar at once
  refreshOnLoad = returnedFromStripe();
  checkoutSession = returnedCheckoutSession();
  document.addEventListener('DOMContentLoaded', start);
})();

// The few lines of script the Agora UIs need: pages are rendered on the
// server; this calls the same APIs the CLI calls, keeps a page's live part
// fresh, and follows a sandbox file.

// Calls an API of this origin; shows what went wrong in #flash and throws.
async function api(method, path, body) {
  const opts = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  if (!r.ok) {
    flash(`${method} ${path}: ${r.status} ${text}`, true);
    throw new Error(text);
  }
  try {
    return text ? JSON.parse(text) : null;
  } catch (e) {
    return text;
  }
}

// A message at the top of the page.
function flash(message, bad) {
  const f = document.getElementById("flash");
  if (f) {
    f.textContent = message;
    f.className = bad ? "flash bad" : "flash ok";
  }
}

// Replaces the page's #live element with a fresh copy every `ms`, so that
// forms elsewhere on the page keep what is typed in them.
function live(ms) {
  setInterval(async () => {
    try {
      const r = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("live");
      const current = document.getElementById("live");
      if (fresh && current) current.replaceWith(fresh);
    } catch (e) {
      // The next round tries again.
    }
  }, ms);
}

// Follows a file through this agent's /files/read, appending to `pre`.
function tail(path, pre) {
  let offset = 0;
  const encoder = new TextEncoder();
  async function step() {
    try {
      const q = `path=${encodeURIComponent(path)}&offset=${offset}&length=65536`;
      const r = await fetch(`/files/read?${q}`);
      if (r.ok) {
        const j = await r.json();
        if (j.data.length > 0) {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.textContent += j.data;
          offset = j.offset + encoder.encode(j.data).length;
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
      }
    } catch (e) {
      // The next round tries again.
    }
    setTimeout(step, 1000);
  }
  step();
}

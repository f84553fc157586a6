// Live refresh: re-fetches this page every few seconds and swaps in its live region, so a
// running recruitment is seen moving. Pauses while the tab is hidden, while focus is inside
// the region (a keyboard user is not yanked away), and when the reader presses "Pause". The
// page is complete without this script.
(() => {
  "use strict";
  const region = document.getElementById("live");
  if (!region) return;
  const every = Number(region.dataset.refresh) || 5000;
  const toggle = document.getElementById("live-toggle");
  let paused = false;
  let timer = null;

  const schedule = () => {
    if (timer === null && !paused && !document.hidden) {
      timer = window.setTimeout(refresh, every);
    }
  };

  async function refresh() {
    timer = null;
    if (paused || document.hidden) return;
    if (region.contains(document.activeElement)) {
      schedule();
      return;
    }
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      const signedOut = response.redirected && new URL(response.url).pathname === "/ui/sign-in";
      if (signedOut) {
        window.location.reload();
        return;
      }
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const stamp = document.getElementById("as-of");
        const freshStamp = page.getElementById("as-of");
        if (stamp && freshStamp) stamp.replaceWith(document.importNode(freshStamp, true));
        const fresh = page.getElementById("live");
        // Swapped only when a figure changed, so the live region speaks only then.
        if (fresh && fresh.innerHTML !== region.innerHTML) {
          region.replaceChildren(...Array.from(fresh.childNodes, (node) => document.importNode(node, true)));
        }
      }
    } catch (_) {
      // A network blip: the next tick tries again.
    }
    schedule();
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", () => {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
      if (paused) {
        window.clearTimeout(timer);
        timer = null;
      } else {
        refresh();
      }
    });
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      window.clearTimeout(timer);
      timer = null;
    } else {
      refresh();
    }
  });
  schedule();
})();

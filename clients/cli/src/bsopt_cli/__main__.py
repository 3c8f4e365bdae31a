"""``bsopt``: the command line (typer).

    bsopt login      code + PKCE login in a browser, or the device flow (RFC 8628) without
                     one or with --device; --username/--password for headless; stores tokens
    bsopt whoami     who resource-api says you are (refreshes the token when needed)
    bsopt logout     revoke the refresh token (RFC 7009) and delete the stored tokens
    bsopt up         run the whole stack in the foreground until Ctrl-C
    bsopt demo       run the main job end to end and write demo-report/summary.json
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bsopt_cli.credentials import Credentials, default_store, valid_credentials
from bsopt_cli.credentials import logout as revoke_and_forget
from bsopt_cli.demo import DemoOptions, run_demo
from bsopt_cli.device import device_login
from bsopt_cli.dpop import DPoPAuth, load_or_create_key
from bsopt_cli.login import LoginError, has_usable_browser
from bsopt_cli.login import login as pkce_login
from bsopt_cli.stack import ALPACA_ACCOUNT, DEMO_USER, Stack, StackError

app = typer.Typer(add_completion=False, help="bsopt: trading research and coaching platform.")
console = Console()


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def login(
    issuer: str = typer.Option(os.environ.get("BSOPT_ISSUER", "http://127.0.0.1:9000")),
    username: str | None = typer.Option(None, help="headless: submit the login form with these credentials"),
    password: str | None = typer.Option(None, envvar="BSOPT_PASSWORD"),
    device: bool = typer.Option(False, "--device", help="use the device flow (RFC 8628): sign in from "
                                                          "a browser on another machine"),
) -> None:
    """Log in and store the tokens: authorization code + PKCE in this machine's browser,
    or the device flow when there is no usable browser (or with --device)."""
    try:
        store = default_store()
        key = load_or_create_key(store)  # DPoP (RFC 9449): the tokens are bound to it
        if username is not None:
            tokens = pkce_login(issuer, username=username, password=password, dpop_key=key)
        elif device or not has_usable_browser():
            if not device:
                _say("No browser available here: using the device flow.")
            tokens = device_login(issuer, announce=_say, dpop_key=key)
        else:
            def announce(url: str) -> None:
                _say(f"Opening your browser to sign in. If it does not open, visit:\n\n    {url}\n")
                _say("(On a machine without a browser, use `bsopt login --device`.)")

            tokens = pkce_login(issuer, announce=announce, dpop_key=key)
        store.save(Credentials.from_tokens(issuer, tokens))
    except LoginError as exc:
        console.print(f"[red]login failed:[/red] {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]login failed:[/red] cannot reach {issuer}: {exc}")
        raise typer.Exit(1) from None
    refresh = "with a refresh token" if tokens.refresh_token else "no refresh token"
    console.print(f"logged in; scopes: {tokens.scope}; expires in {tokens.expires_in}s ({refresh}); "
                  f"stored in {store.location}")


@app.command()
def whoami(
    api_url: str = typer.Option(os.environ.get("BSOPT_API_URL", "http://127.0.0.1:8000"), help="resource-api"),
) -> None:
    """Ask resource-api who the stored login is (GET /v1/me), refreshing the token first
    when it expires within 60 s."""
    try:
        store = default_store()
        creds = valid_credentials(store)
        url = api_url.rstrip("/") + "/v1/me"
        if creds.dpop_bound:  # RFC 9449 §7: Authorization: DPoP + a proof by the installation's key
            resp = httpx.get(url, auth=DPoPAuth(load_or_create_key(store), creds.access_token), timeout=10.0)
        else:
            resp = httpx.get(url, headers={"authorization": f"Bearer {creds.access_token}"}, timeout=10.0)
    except LoginError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {api_url}: {exc}[/red]")
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        console.print(f"[red]resource-api answered HTTP {resp.status_code}: {resp.text[:200]}[/red]")
        raise typer.Exit(1)
    me = resp.json()
    console.print(f"subject: {me.get('sub')}; client: {me.get('client_id')}; scopes: {' '.join(me.get('scopes', []))}")


@app.command()
def logout() -> None:
    """Revoke the stored refresh token at the issuer (RFC 7009) and delete the stored tokens."""
    try:
        result = revoke_and_forget()
    except LoginError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if not result.had_credentials:
        console.print("not logged in")
    elif result.revoked:
        console.print("logged out: the refresh token is revoked and the stored tokens are deleted")
    else:
        console.print(f"logged out: the stored tokens are deleted ({result.detail or 'nothing revoked'})")


def _print_urls(stack: Stack) -> None:
    p = stack.ports
    t = Table(title="bsopt stack", show_lines=False)
    t.add_column("service")
    t.add_column("address")
    for name, addr in [("auth-server (issuer)", stack.issuer), ("resource-api", stack.api_url),
                       ("broker-gateway (gRPC)", f"127.0.0.1:{p.broker}"),
                       ("ml-scorer (gRPC)", f"127.0.0.1:{p.scorer}"),
                       ("rl-trainer (gRPC)", f"127.0.0.1:{p.trainer}"),
                       ("digest-worker (gRPC health)", f"127.0.0.1:{p.digest}")]:
        t.add_row(name, addr)
    if stack.alpaca_standin:
        t.add_row("Alpaca stand-in (HTTP)", stack.alpaca_url)
    console.print(t)
    console.print(f"demo user: [bold]{DEMO_USER[0]}[/bold] / [bold]{DEMO_USER[1]}[/bold]  "
                  f"(public client bsopt-cli; service clients use private_key_jwt with their keys in {stack.keys_dir})")
    where = "the local stand-in" if stack.alpaca_standin else "Alpaca (keys from the environment)"
    console.print(f"Alpaca account {ALPACA_ACCOUNT!r} of the demo user at {where}; accounts file {stack.accounts_file}")
    console.print(f"logs: {stack.log_dir}/<service>.log")


@app.command()
def up(state_dir: Path = typer.Option(Path(".state"))) -> None:
    """Start Postgres, Kafka and the six services in the foreground; Ctrl-C stops all."""
    stack = Stack(state_dir=state_dir)
    stop = threading.Event()
    # Handle both explicitly: a shell may start us with SIGINT ignored (background jobs).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with console.status("starting the stack..."):
            stack.start()
        _print_urls(stack)
        console.print("[green]running[/green] - press Ctrl-C to stop")
        while not stop.wait(0.5):
            for child in stack.children:
                if child.proc.poll() is not None:
                    console.print(f"[red]{child.name} exited ({child.proc.returncode}); see {child.log_path}[/red]")
                    stop.set()
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        console.print("stopping...")
        stack.stop()


@app.command()
def demo(
    timesteps: int = typer.Option(131_072, help="PPO timesteps per model (agent and MLP baseline each)"),
    seed: int = typer.Option(0),
    state_dir: Path = typer.Option(Path(".state")),
    report_dir: Path = typer.Option(Path("demo-report")),
) -> None:
    """Run the main job end to end on real data and write demo-report/summary.json."""
    stack = Stack(state_dir=state_dir)
    try:
        with console.status("starting the stack (embedded Postgres, Kafka, six services)..."):
            stack.start()
        _print_urls(stack)
        opts = DemoOptions(issuer=stack.issuer, api_url=stack.api_url, username=DEMO_USER[0],
                           password=DEMO_USER[1], total_timesteps=timesteps, seed=seed, report_dir=report_dir,
                           # orders on a real account are not for a demo: the stand-in's only
                           alpaca_account=ALPACA_ACCOUNT if stack.alpaca_standin else None)
        summary = asyncio.run(run_demo(opts, log=console.print))
    except (StackError, LoginError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        stack.stop()
    print_report(summary)
    console.print(f"written: {report_dir / 'summary.json'}")


def print_report(s: dict) -> None:
    tr = s["training"]
    t = Table(title=f"Held-out test {s['data']['test_start']} .. {s['data']['test_end']} "
                    f"({s['data']['symbol']}, {tr['transaction_cost_bps']} bps costs, seed {tr['seed']})")
    for col in ("strategy", "total return", "Sharpe", "max drawdown", "trades"):
        t.add_column(col, justify="right" if col != "strategy" else "left")
    for name, key in (("PPO + Transformer (agent)", "agent"), ("PPO + MLP (baseline)", "mlp_baseline"),
                      ("buy and hold", "buy_and_hold")):
        m = tr["test"][key]
        sharpe = "n/a" if m["sharpe"] is None else f"{m['sharpe']:.2f}"
        t.add_row(name, f"{100 * m['total_return']:+.1f}%", sharpe, f"{100 * m['max_drawdown']:.1f}%",
                  str(m["trades"]))
    console.print(t)
    agent, bh = tr["test"]["agent"]["total_return"], tr["test"]["buy_and_hold"]["total_return"]
    verdict = "beat" if agent > bh else "lost to"
    console.print(f"The agent {verdict} buy-and-hold on the held-out dates "
                  f"({100 * agent:+.1f}% vs {100 * bh:+.1f}%), one seed, {tr['timesteps']} timesteps "
                  f"trained in {tr['seconds']:.0f}s.")
    console.print(f"paper trading: {s['paper_trading']['orders']} orders, {s['paper_trading']['fills']} fills; "
                  f"imported {s['import']['trades_imported']}, re-import skipped {s['import']['duplicates_skipped']}")
    console.print(f"bias tags: {json.dumps(s['bias'])}; coach.reflect messages over WebSocket: "
                  f"{s['events']['ws_messages']}")
    d = s["digest"]
    console.print(f"latest weekly digest {d['period_start']} .. {d['period_end']}: {d['trades']} trades. "
                  f"{d['summary']}")
    a = s["alpaca"]
    if "skipped" in a:
        console.print(f"alpaca: skipped ({a['skipped']})")
    else:
        console.print(f"alpaca {a['account_id']} ({a['account_kind']}): {a['orders']} orders, {a['fills']} fills, "
                      f"{a['rejected']} rejected; imported {a['fills_imported']} fills, re-import skipped "
                      f"{a['duplicates_skipped']}; {a['orders_with_timing']} orders with their timing; close-all "
                      f"{a['close_all']['status']} ({a['close_all']['positions_sold']} positions sold)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""Loaded by the test master's master.cfg (no tests here): a service that
tells the test what the master does and does what the test asks.

It connects to the test's TCP port (127.0.0.1), sends one JSON line per event
(``started``, ``output`` lines of announced steps, ``worker-connected``,
``worker-disconnected``, ``worker-missing``, ``step-started``,
``build-finished`` with its steps and their stdio) and answers commands
(``force``, ``stop-build``, ``stop-worker``, ``workers``, ``ports``) with
``{"reply": id, ...}``.  Builds are triggered here, without the web UI.
"""

from __future__ import annotations

import json

from buildbot.process.logobserver import LogLineObserver
from buildbot.steps.shell import ShellCommand
from buildbot.util import service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver


class _Line(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self, probe):
        self.probe = probe

    def lineReceived(self, line):
        self.probe.command(json.loads(line))


class MasterProbe(service.BuildbotService):
    name = "ww-test-probe"

    def checkConfig(self, port):
        pass

    def reconfigService(self, port):
        self.port = port

    @defer.inlineCallbacks
    def startService(self):
        yield super().startService()
        ep = TCP4ClientEndpoint(self.master.reactor, "127.0.0.1", self.port)
        self.line = yield connectProtocol(ep, _Line(self))
        self.consumers = [
            (yield self.master.mq.startConsuming(self._build_finished, ("builds", None, "finished"))),
            (yield self.master.mq.startConsuming(self._step_started, ("steps", None, "started"))),
            (yield self.master.mq.startConsuming(self._worker_event, ("workers", None, None))),
        ]
        self.send({"event": "started"})

    def stopService(self):
        for c in self.consumers:
            c.stopConsuming()
        self.line.transport.loseConnection()
        return super().stopService()

    def send(self, obj):
        self.line.sendLine(json.dumps(obj, default=str).encode())

    def _worker_event(self, key, msg):
        if key[-1] in ("connected", "disconnected", "missing"):
            self.send({"event": f"worker-{key[-1]}", "name": msg["name"], "workerinfo": msg.get("workerinfo"),
                       "notify": msg.get("notify")})

    @defer.inlineCallbacks
    def _builder_name(self, buildid):
        build = yield self.master.data.get(("builds", buildid))
        builder = yield self.master.data.get(("builders", build["builderid"]))
        return build, builder["name"]

    @defer.inlineCallbacks
    def _step_started(self, key, step):
        build, builder = yield self._builder_name(step["buildid"])
        self.send({"event": "step-started", "builder": builder, "step": step["name"], "buildid": step["buildid"]})

    @defer.inlineCallbacks
    def _build_finished(self, key, build):
        build, builder = yield self._builder_name(build["buildid"])
        worker = yield self.master.data.get(("workers", build["workerid"]))
        steps = yield self.master.data.get(("builds", build["buildid"], "steps"))
        out = []
        for step in steps:
            logs = yield self.master.data.get(("steps", step["stepid"], "logs"))
            text = {}
            for lg in logs:
                content = yield self.master.data.get(("logs", lg["logid"], "contents"))
                text[lg["name"]] = content["content"] if content else ""
            out.append({"name": step["name"], "results": step["results"], "logs": text})
        self.send({"event": "build-finished", "builder": builder, "buildid": build["buildid"],
                   "results": build["results"], "worker": worker["name"], "steps": out})

    def command(self, cmd):
        d = defer.ensureDeferred(self._command(cmd))
        d.addCallback(lambda r: self.send({"reply": cmd["id"], **(r or {})}))
        d.addErrback(lambda f: self.send({"reply": cmd["id"], "error": f.getErrorMessage()}))

    async def _worker_id(self, name):
        for w in await self.master.data.get(("workers",)):
            if w["name"] == name:
                return w["workerid"]
        raise KeyError(name)

    async def _command(self, cmd):
        what = cmd["cmd"]
        if what == "force":
            sched = self.master.scheduler_manager.namedServices["force"]
            bsid, _ = await sched.addBuildsetForSourceStampsWithDefaults(
                "test", sourcestamps=[], builderNames=[cmd["builder"]])
            return {"bsid": bsid}
        if what == "stop-build":
            await self.master.data.control("stop", {"reason": cmd.get("reason", "test")},
                                           ("builds", cmd["buildid"]))
            return {}
        if what == "stop-worker":
            await self.master.data.control("stop", {}, ("workers", await self._worker_id(cmd["name"])))
            return {}
        if what == "workers":
            return {"workers": [dict(w) for w in await self.master.data.get(("workers",))]}
        if what == "ports":
            ports = {}
            for name, reg in self.master.workers.registrations.items():
                get = getattr(reg, "getPort", None) or reg.getPBPort
                ports[name] = get()
            return {"ports": ports}
        raise ValueError(f"unknown test command {what!r}")


class AnnounceOutput(LogLineObserver):
    """Sends every stdout line of a step's stdio to the test as an ``output`` event."""

    def outLineReceived(self, line):
        step = self.step
        probe = step.master.service_manager.namedServices[MasterProbe.name]
        probe.send({"event": "output", "builder": step.build.builder.name, "buildid": step.build.buildid,
                    "step": step.name, "line": line})


class AnnouncedShellCommand(ShellCommand):
    """A ``ShellCommand`` whose stdout lines are announced to the test."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.addLogObserver("stdio", AnnounceOutput())

"""The message workbench: send a test message, look at a queue's or a subscription's messages
without touching them, receive-and-requeue for debugging, read a topic's log, seek a
subscription, and work a dead-letter queue (redrive or purge, the chosen messages or all).

Sending and receiving go through the data-plane service (:mod:`queues.messaging`) exactly as
an API call does, with the member's role as the scopes of a console session
(``api.authentication.ConsoleSessionAuthentication`` makes the same principal): the same
validation, the same rate and quota, the same usage counted. Browsing reads through the
selectors that lease, move and count nothing. Every write refuses viewers (403) and every
lookup is within the session's tenant (404 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views.generic import TemplateView
from redis.exceptions import RedisError

from console.views import STORE_DOWN, ServiceFormView, TenantMixin, WriterMixin
from console.workbench_forms import (
    DEFAULT_REDRIVE_MAX,
    REQUEUE_LEASE_MS,
    DeadLetterActionForm,
    RequeueForm,
    SeekForm,
    SendForm,
    build_message,
    seek_target,
)
from kernel.errors import InvalidRequest, NotFound, PlatformError
from kernel.limits import MAX_PAGE
from kernel.redis_client import close_loop_clients
from queues import messaging
from queues import selectors as queue_selectors
from queues import services as queue_services
from queues.models import Queue, Subscription, Topic
from tenants.principals import Principal, tenant_cache

PAGE = 25
LOG_PAGE = 50

T = TypeVar("T")


def _run(call: Callable[[], Awaitable[T]]) -> T:
    """Run a data-plane call from a sync view on a loop of its own, and close that loop's
    Redis connections when it ends (they belong to the loop: see kernel.redis_client). The
    view's thread has no running loop, under WSGI and in ASGI's worker threads alike."""

    async def main() -> T:
        try:
            return await call()
        finally:
            await close_loop_clients()

    return asyncio.run(main())


def _page_size(request: HttpRequest, default: int) -> int:
    try:
        return max(1, min(int(request.GET.get("limit", default)), MAX_PAGE))
    except ValueError:
        return default


def _at(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


def shown(message: dict[str, Any]) -> dict[str, Any]:
    """A readable message with what its template shows: ``pretty`` (the JSON body indented,
    None for a binary one), ``size`` of a binary body, and the ms times as datetimes."""
    out = dict(message)
    if "body" in message:
        out["pretty"] = json.dumps(message["body"], indent=2, ensure_ascii=False)
    else:
        out["pretty"] = None
        out["size"] = len(base64.b64decode(message["body_base64"]))
    for name in ("lease_deadline_ms", "retry_due_ms", "due_ms"):
        out[name.removesuffix("_ms")] = _at(message.get(name))
    return out


def _shown_page(page: dict[str, Any]) -> dict[str, Any]:
    return {**page, "messages": [shown(m) for m in page["messages"]]}


class WorkbenchMixin(TenantMixin):
    """Looks up the resource named in the URL within the session's tenant (404 otherwise)."""

    kind = "queue"
    kwargs: dict[str, Any]

    _row: Queue | Topic | Subscription | None = None

    def check_access(self) -> None:
        """The role check first (a viewer's write is a 403), then the lookup (a 404), so no
        handler, not even a form's GET, runs for another tenant's resource."""
        super().check_access()
        self.resource()

    def resource(self) -> Queue | Topic | Subscription:
        if self._row is None:
            try:
                self._row = queue_selectors.resource_get(
                    tenant=self.tenant, kind=self.kind, name=self.kwargs["name"]
                )
            except NotFound as exc:
                raise Http404(f"No such {self.kind}.") from exc
        return self._row

    def principal(self) -> Principal:
        """The member as the data plane sees a console session (see the module docstring)."""
        tenant_doc = tenant_cache.get(str(self.tenant.id))
        if tenant_doc is None or not tenant_doc["active"]:
            raise PermissionDenied("This tenant is not active.")
        return Principal(
            key_id="",
            prefix="",
            tenant_id=str(self.tenant.id),
            scopes=self.permissions.scopes,
            resources=(),
            tenant=tenant_doc,
            actor=self.actor,
        )

    def doc(self) -> dict[str, Any]:
        try:
            return queue_selectors.resource_doc(str(self.tenant.id), self.kind, self.kwargs["name"])
        except NotFound as exc:
            raise Http404(f"No such {self.kind}.") from exc


def _queue_url(name: str) -> str:
    return reverse("console:workbench-queue", kwargs={"name": name})


# --- a queue's messages -----------------------------------------------------------------------


class QueueMessagesView(WorkbenchMixin, TemplateView):
    """GET only, and side-effect free: the stored messages from offset ``after`` and the
    delayed ones from position ``delayed``; the numbers are read without doing the due work
    (a due delay shows as delayed here until the next pull or tick moves it)."""

    template_name = "console/workbench/queue_messages.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queue = self.resource()
        assert isinstance(queue, Queue)
        limit = _page_size(self.request, PAGE)
        after = self.request.GET.get("after") or None
        try:
            start = max(int(self.request.GET.get("delayed", 0)), 0)
        except ValueError:
            start = 0
        context.update(queue=queue, after=after, error=None, store_down=False, limit=limit)
        try:
            context.update(
                stats=queue_selectors.quiet_stats(queue),
                page=_shown_page(queue_selectors.queue_browse(queue, limit=limit, after=after)),
                delayed=_shown_page(queue_selectors.queue_delayed(queue, limit=limit, start=start)),
                feeders=queue_selectors.dead_letter_feeders(queue),
            )
        except InvalidRequest as exc:
            context["error"] = exc.detail
        except RedisError:
            context["store_down"] = True
        context["requeue_form"] = RequeueForm()
        return context


class SendView(WorkbenchMixin, ServiceFormView):
    """Publish one message as an API publish would (validation, limits, usage)."""

    form_class = SendForm
    template_name = "console/workbench/send.html"
    submit_label = "Send message"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        self.title = f"Send a message to {self.kind} \u201c{self.kwargs['name']}\u201d"
        self.intro = "It is published like any other: consumers receive it and it counts in usage."
        context = super().get_context_data(**kwargs)
        context["resource"] = self.resource()
        return context

    def dashboard_url(self) -> str:
        if self.kind == "topic":
            return reverse("console:workbench-topic-log", kwargs={"name": self.kwargs["name"]})
        return _queue_url(self.kwargs["name"])

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        principal, doc = self.principal(), self.doc()
        kind: Literal["queue", "topic"] = "topic" if self.kind == "topic" else "queue"
        message = build_message(data)
        (result,) = _run(lambda: messaging.publish(principal, kind, doc, message))
        if result.get("duplicate"):
            return self.done(f"Not stored: message {result['id']} had the same dedup id.")
        where = "delayed" if result.get("offset") is None else f"offset {result['offset']}"
        return self.done(f"Message {result['id']} sent ({where}).")


class QueueSendView(SendView):
    kind = "queue"


class TopicSendView(SendView):
    kind = "topic"


async def _receive_and_requeue(
    principal: Principal,
    doc: dict[str, Any],
    count: int,
    kind: Literal["queue", "subscription"] = "queue",
) -> list[dict[str, Any]]:
    received = await messaging.pull(
        principal, kind, doc, count=count, visibility_ms=REQUEUE_LEASE_MS
    )
    if received:
        await messaging.settle(principal, kind, doc, "nack", [m["ack_id"] for m in received], ms=0)
    return received


class QueueRequeueView(WorkbenchMixin, WriterMixin, TemplateView):
    """POST count: lease up to ``count`` messages and give them back at once (a nack with no
    delay). It is a real delivery: each one's delivery attempts go up, and one at its last
    attempt goes to the dead-letter queue."""

    template_name = "console/workbench/requeue.html"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        queue = self.resource()
        form = RequeueForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Receive 1 to 10 messages at a time.")
            return HttpResponseRedirect(_queue_url(name))
        try:
            principal, doc = self.principal(), self.doc()
            count = form.cleaned_data["count"]
            received = _run(lambda: _receive_and_requeue(principal, doc, count))
        except PlatformError as exc:
            messages.error(request, exc.detail)
            return HttpResponseRedirect(_queue_url(name))
        except RedisError:
            messages.error(request, STORE_DOWN)
            return HttpResponseRedirect(_queue_url(name))
        context = self.get_context_data(
            queue=queue, received=[shown(queue_selectors.readable(m)) for m in received]
        )
        return render(request, self.template_name, context)


# --- topics and subscriptions -----------------------------------------------------------------


class TopicLogView(WorkbenchMixin, TemplateView):
    """A partition's retained log from offset ``after`` (GET partition, after)."""

    kind = "topic"
    template_name = "console/workbench/topic_log.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        topic = self.resource()
        assert isinstance(topic, Topic)
        try:
            partition = int(self.request.GET.get("partition", 0))
        except ValueError:
            partition = 0
        after = self.request.GET.get("after") or None
        limit = _page_size(self.request, LOG_PAGE)
        context.update(
            topic=topic,
            partition=partition,
            partitions=range(topic.partitions),
            after=after,
            error=None,
            store_down=False,
            subscriptions=list(
                queue_selectors.subscription_list(tenant=self.tenant)
                .filter(topic=topic)
                .order_by("name")
            ),
        )
        try:
            context["page"] = _shown_page(
                queue_selectors.topic_log_page(
                    topic, partition=max(partition, 0), limit=limit, after=after
                )
            )
        except InvalidRequest as exc:
            context["error"] = exc.detail
        except RedisError:
            context["store_down"] = True
        return context


def _subscription_url(name: str) -> str:
    return reverse("console:workbench-subscription", kwargs={"name": name})


class SubscriptionMessagesView(WorkbenchMixin, TemplateView):
    """GET only, and side-effect free: a subscription's numbers and its group on each
    partition, the messages it delivered and has not settled (in flight or waiting to be
    delivered again) from cursor ``pending``, the ones it delivers next from its position on
    (cursor ``after``), and the topic's delayed messages its filter lets through (cursor
    ``delayed``). Nothing is leased, moved or counted, and no due work is done (see
    :func:`queues.selectors.subscription_peek`)."""

    kind = "subscription"
    template_name = "console/workbench/subscription.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        sub = self.resource()
        assert isinstance(sub, Subscription)
        limit = _page_size(self.request, PAGE)
        after = self.request.GET.get("after") or None
        pending = self.request.GET.get("pending") or None
        delayed = self.request.GET.get("delayed") or None
        context.update(
            subscription=sub,
            seek_form=SeekForm(),
            requeue_form=RequeueForm(),
            stats=None,
            error=None,
            store_down=False,
            paged=bool(after or pending or delayed),
        )
        try:
            context["stats"] = queue_selectors.quiet_stats(sub)
            peek = queue_selectors.subscription_peek(
                sub, limit=limit, after=after, pending=pending, delayed=delayed
            )
            context.update(
                partitions=peek["partitions"],
                pending_page=_shown_page(peek["pending"]),
                unread_page=_shown_page(peek["unread"]),
                delayed_page=_shown_page(peek["delayed"]),
            )
        except InvalidRequest as exc:
            context["error"] = exc.detail
        except RedisError:
            context["store_down"] = True
        return context


class SubscriptionRequeueView(WorkbenchMixin, WriterMixin, TemplateView):
    """POST count: pull up to ``count`` messages of the subscription and give them back at
    once (a nack with no delay), as :class:`QueueRequeueView` does for a queue. It is a real
    delivery: each one's delivery attempts go up, one at its last attempt goes to the
    dead-letter queue, and the deliveries count in usage like an API pull's."""

    kind = "subscription"
    template_name = "console/workbench/subscription_requeue.html"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        sub = self.resource()
        form = RequeueForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Receive 1 to 10 messages at a time.")
            return HttpResponseRedirect(_subscription_url(name))
        try:
            principal, doc = self.principal(), self.doc()
            count = form.cleaned_data["count"]
            received = _run(lambda: _receive_and_requeue(principal, doc, count, "subscription"))
        except PlatformError as exc:
            messages.error(request, exc.detail)
            return HttpResponseRedirect(_subscription_url(name))
        except RedisError:
            messages.error(request, STORE_DOWN)
            return HttpResponseRedirect(_subscription_url(name))
        context = self.get_context_data(
            subscription=sub, received=[shown(queue_selectors.readable(m)) for m in received]
        )
        return render(request, self.template_name, context)


class SubscriptionSeekView(WorkbenchMixin, ServiceFormView):
    kind = "subscription"
    form_class = SeekForm
    template_name = "console/workbench/seek.html"
    submit_label = "Seek"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        self.title = f"Seek subscription \u201c{self.kwargs['name']}\u201d"
        self.intro = "Messages from the chosen point on become unread; leases held now are dropped."
        return super().get_context_data(**kwargs)

    def dashboard_url(self) -> str:
        return _subscription_url(self.kwargs["name"])

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        sub = self.resource()
        assert isinstance(sub, Subscription)
        to = seek_target(data)
        queue_services.subscription_seek(
            tenant=self.tenant, actor=self.actor, subscription=sub, to=to
        )
        shown = to if isinstance(to, str) else f"{to:%Y-%m-%d %H:%M:%S} UTC"
        return self.done(f"Subscription \u201c{sub.name}\u201d now reads from {shown}.")


# --- dead letters -----------------------------------------------------------------------------


class DeadLettersView(WorkbenchMixin, TemplateView):
    """The dead letters stored in a queue (GET after), with where they came from and why,
    and the queues and subscriptions that send theirs here. Reading changes nothing."""

    template_name = "console/workbench/dead_letters.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        queue = self.resource()
        assert isinstance(queue, Queue)
        after = self.request.GET.get("after") or None
        context.update(
            queue=queue,
            after=after,
            error=None,
            store_down=False,
            feeders=queue_selectors.dead_letter_feeders(queue),
            other_queues=[
                q.name
                for q in queue_selectors.queue_list(tenant=self.tenant).order_by("name")
                if q.pk != queue.pk
            ],
            redrive_max=DEFAULT_REDRIVE_MAX,
        )
        try:
            context["page"] = _shown_page(
                queue_selectors.dead_letter_page(
                    queue, limit=_page_size(self.request, PAGE), after=after
                )
            )
        except InvalidRequest as exc:
            context["error"] = exc.detail
        except RedisError:
            context["store_down"] = True
        return context


class DeadLetterActionView(WorkbenchMixin, WriterMixin, TemplateView):
    """POST action (redrive | purge), scope (selected | all), ids, to, max_messages. Without
    ``confirm`` it only shows what would happen; with ``confirm`` it acts, through the
    services that write the audit event. A redrive of all moves at most ``max_messages``
    (default :data:`DEFAULT_REDRIVE_MAX`) per action: the rate is one batch per click."""

    template_name = "console/workbench/dead_letters_confirm.html"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        queue = self.resource()
        assert isinstance(queue, Queue)
        back = reverse("console:workbench-dead-letters", kwargs={"name": name})
        form = DeadLetterActionForm(request.POST)
        if not form.is_valid():
            for error in form.non_field_errors() or ["Choose what to do."]:
                messages.error(request, str(error))
            return HttpResponseRedirect(back)
        data = form.cleaned_data
        if not data["confirm"]:
            context = self.get_context_data(
                queue=queue, form=form, data=data, back=back, redrive_max=DEFAULT_REDRIVE_MAX
            )
            if data["scope"] == "selected":
                chosen = set(data["ids"])
                try:
                    page = queue_selectors.dead_letter_page(queue, limit=MAX_PAGE)
                except (InvalidRequest, RedisError):
                    page = {"messages": []}
                context["chosen"] = [shown(m) for m in page["messages"] if m["offset"] in chosen]
            return render(request, self.template_name, context)
        try:
            messages.success(request, self.act(queue, data))
        except PlatformError as exc:
            messages.error(request, exc.detail)
        except RedisError:
            messages.error(request, STORE_DOWN)
        return HttpResponseRedirect(back)

    def act(self, queue: Queue, data: dict[str, Any]) -> str:
        tenant, actor = self.tenant, self.actor
        if data["action"] == "purge":
            if data["scope"] == "all":
                purged = queue_services.queue_purge(tenant=tenant, actor=actor, queue=queue)
            else:
                purged = queue_services.dead_letter_purge(
                    tenant=tenant, actor=actor, queue=queue, ids=data["ids"]
                )
            return f"{purged} message{'s' if purged != 1 else ''} purged."
        if data["scope"] == "all":
            result = queue_services.queue_redrive(
                tenant=tenant,
                actor=actor,
                queue=queue,
                to=data["to"],
                max_messages=data["max_messages"] or DEFAULT_REDRIVE_MAX,
            )
        else:
            result = queue_services.dead_letter_redrive(
                tenant=tenant, actor=actor, queue=queue, ids=data["ids"], to=data["to"]
            )
        return f"{result['moved']} moved, {result['skipped']} skipped."


urlpatterns = [
    path("queues/<str:name>/messages/", QueueMessagesView.as_view(), name="workbench-queue"),
    path("queues/<str:name>/messages/send/", QueueSendView.as_view(), name="workbench-queue-send"),
    path(
        "queues/<str:name>/messages/requeue/",
        QueueRequeueView.as_view(),
        name="workbench-queue-requeue",
    ),
    path(
        "queues/<str:name>/dead-letters/",
        DeadLettersView.as_view(),
        name="workbench-dead-letters",
    ),
    path(
        "queues/<str:name>/dead-letters/act/",
        DeadLetterActionView.as_view(),
        name="workbench-dead-letters-act",
    ),
    path("topics/<str:name>/log/", TopicLogView.as_view(), name="workbench-topic-log"),
    path("topics/<str:name>/send/", TopicSendView.as_view(), name="workbench-topic-send"),
    path(
        "subscriptions/<str:name>/messages/",
        SubscriptionMessagesView.as_view(),
        name="workbench-subscription",
    ),
    path(
        "subscriptions/<str:name>/messages/requeue/",
        SubscriptionRequeueView.as_view(),
        name="workbench-subscription-requeue",
    ),
    path(
        "subscriptions/<str:name>/seek/",
        SubscriptionSeekView.as_view(),
        name="workbench-subscription-seek",
    ),
]

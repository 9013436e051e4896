"""A page per queue, topic and subscription, and the lists that lead to them.

Lists are searched and sorted by PostgreSQL (natural order: "q2" before "q10") and paged,
so a page costs the same few queries and one Redis pipeline however many
resources the tenant has. A name is looked up within the session's tenant only: another
tenant's is a 404. Viewers see every page; editing and deleting are writer views (403).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.generic import TemplateView

from console.resource_forms import DeleteForm, QueueEditForm, SubscriptionEditForm, TopicEditForm
from console.views import ConsumerRow, ServiceFormView, TenantMixin, _live_stats
from kernel.errors import NotFound
from kernel.limits import NAME_MAX_LENGTH
from queues import selectors as queue_selectors
from queues import services as queue_services
from queues.models import Queue, Subscription, Topic

PAGE_SIZE = 50


def _quoted(name: str) -> str:
    return f"\u201c{name}\u201d"


# --- lists -------------------------------------------------------------------------------------


class ResourceListView(TenantMixin, TemplateView):
    """One page of the tenant's resources of a kind whose name contains ``?q=`` (any case),
    in natural order; ``?page=`` out of range shows the nearest page."""

    kind = ""
    plural = ""

    def rows(self, search: str) -> QuerySet[Any]:
        raise NotImplementedError

    def decorate(self, items: list[Any]) -> tuple[list[Any], bool]:
        """The rows the template shows, and whether live numbers are missing."""
        return items, False

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        search = self.request.GET.get("q", "").strip()[:NAME_MAX_LENGTH]
        page: Page[Any] = Paginator(self.rows(search), PAGE_SIZE).get_page(
            self.request.GET.get("page")
        )
        rows, stats_unavailable = self.decorate(list(page.object_list))
        context = super().get_context_data(**kwargs)
        context.update(
            kind=self.kind,
            plural=self.plural,
            search=search,
            page=page,
            rows=rows,
            stats_unavailable=stats_unavailable,
            prev_url=self._page_url(search, page.previous_page_number())
            if page.has_previous()
            else None,
            next_url=self._page_url(search, page.next_page_number()) if page.has_next() else None,
        )
        return context

    def _page_url(self, search: str, number: int) -> str:
        query = {"q": search, "page": number} if search else {"page": number}
        return f"{self.request.path}?{urlencode(query)}"


class _ConsumerListView(ResourceListView):
    def decorate(self, items: list[Any]) -> tuple[list[Any], bool]:
        stats = _live_stats(items)
        rows = [
            ConsumerRow(row, stats[i] if stats is not None else None) for i, row in enumerate(items)
        ]
        return rows, stats is None


class QueueListView(_ConsumerListView):
    template_name = "console/resources/queue_list.html"
    kind, plural = "queue", "queues"

    def rows(self, search: str) -> QuerySet[Queue]:
        return queue_selectors.queue_search(tenant=self.tenant, search=search)


class TopicListView(ResourceListView):
    template_name = "console/resources/topic_list.html"
    kind, plural = "topic", "topics"

    def rows(self, search: str) -> QuerySet[Topic]:
        return queue_selectors.topic_search(tenant=self.tenant, search=search)


class SubscriptionListView(_ConsumerListView):
    template_name = "console/resources/subscription_list.html"
    kind, plural = "subscription", "subscriptions"

    def rows(self, search: str) -> QuerySet[Subscription]:
        return queue_selectors.subscription_search(tenant=self.tenant, search=search)


# --- one resource ------------------------------------------------------------------------------


class ResourceMixin(TenantMixin):
    """The tenant's resource of ``kind`` named in the URL; 404 when it has none."""

    kind = ""
    kwargs: dict[str, Any]

    @cached_property
    def resource(self) -> Any:
        try:
            return queue_selectors.resource_get(
                tenant=self.tenant, kind=self.kind, name=self.kwargs["name"]
            )
        except NotFound as exc:
            raise Http404(f"No such {self.kind}.") from exc

    def detail_url(self) -> str:
        return reverse(f"console:{self.kind}-detail", args=[self.resource.name])

    def list_url(self) -> str:
        return reverse(f"console:{self.kind}-list")

    def queue_names(self) -> list[str]:
        """The tenant's queues, the dead-letter queues a form may offer."""
        rows = queue_selectors.queue_search(tenant=self.tenant).values_list("name", flat=True)
        return list(rows)


def _one_stats(row: Queue | Subscription) -> dict[str, int] | None:
    stats = _live_stats([row])  # type: ignore[arg-type]  # a list of one kind
    return stats[0] if stats is not None else None


class QueueDetailView(ResourceMixin, TemplateView):
    template_name = "console/resources/queue_detail.html"
    kind = "queue"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        queue = self.resource
        context = super().get_context_data(**kwargs)
        context.update(
            queue=queue,
            stats=_one_stats(queue),
            feeders=queue_selectors.dead_letter_feeders(queue),
        )
        return context


class TopicDetailView(ResourceMixin, TemplateView):
    template_name = "console/resources/topic_detail.html"
    kind = "topic"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        topic = self.resource
        subs = list(queue_selectors.topic_subscriptions(tenant=self.tenant, topic=topic))
        stats = _live_stats(subs)
        context = super().get_context_data(**kwargs)
        context.update(
            topic=topic,
            subscriptions=[
                ConsumerRow(s, stats[i] if stats is not None else None) for i, s in enumerate(subs)
            ],
            stats_unavailable=stats is None and bool(subs),
        )
        return context


class SubscriptionDetailView(ResourceMixin, TemplateView):
    template_name = "console/resources/subscription_detail.html"
    kind = "subscription"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        sub = self.resource
        context = super().get_context_data(**kwargs)
        context.update(subscription=sub, stats=_one_stats(sub))
        return context


# --- edit and delete ---------------------------------------------------------------------------


class ResourceEditView(ResourceMixin, ServiceFormView):
    """The resource's changeable settings; only what differs from the stored row goes to the
    service (and so into the audit trail). Nothing changed: no call, no audit event."""

    submit_label = "Save changes"
    changes: dict[str, Any]

    @property
    def title(self) -> str:  # type: ignore[override]  # a class attribute in the base
        return f"Edit {self.kind} {_quoted(self.resource.name)}"

    def update(self, changes: dict[str, Any]) -> None:
        raise NotImplementedError

    def form_valid(self, form: Any) -> HttpResponse:
        self.changes = form.changes()
        return super().form_valid(form)

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        if not self.changes:
            messages.info(self.request, "Nothing changed.")
            return HttpResponseRedirect(self.detail_url())
        self.update(self.changes)
        messages.success(
            self.request, f"{self.kind.capitalize()} {_quoted(self.resource.name)} saved."
        )
        return HttpResponseRedirect(self.detail_url())

    def dashboard_url(self) -> str:
        """Cancel goes back to the resource's page."""
        return self.detail_url()


class QueueEditView(ResourceEditView):
    form_class = QueueEditForm
    kind = "queue"
    intro = "Changes apply to the messages delivered from now on."

    def get_form_kwargs(self) -> dict[str, Any]:
        return {
            **super().get_form_kwargs(),
            "queue": self.resource,
            "queue_names": self.queue_names(),
        }

    def update(self, changes: dict[str, Any]) -> None:
        queue_services.queue_update(
            tenant=self.tenant, actor=self.actor, queue=self.resource, changes=changes
        )


class TopicEditView(ResourceEditView):
    form_class = TopicEditForm
    kind = "topic"
    intro = "A topic's retention can change; its partitions are fixed."

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "topic": self.resource}

    def update(self, changes: dict[str, Any]) -> None:
        queue_services.topic_update(
            tenant=self.tenant, actor=self.actor, topic=self.resource, changes=changes
        )


class SubscriptionEditView(ResourceEditView):
    form_class = SubscriptionEditForm
    kind = "subscription"
    intro = "The topic and the starting point are fixed; the filter and delivery can change."

    def get_form_kwargs(self) -> dict[str, Any]:
        return {
            **super().get_form_kwargs(),
            "subscription": self.resource,
            "queue_names": self.queue_names(),
        }

    def update(self, changes: dict[str, Any]) -> None:
        queue_services.subscription_update(
            tenant=self.tenant, actor=self.actor, subscription=self.resource, changes=changes
        )


class ResourceDeleteView(ResourceMixin, ServiceFormView):
    """GET asks for the name, POST deletes when it was typed exactly (HTTP DELETE is not
    offered: it would skip the confirmation). A wrong name or a service refusal (a queue
    still in use as a dead-letter queue) deletes nothing."""

    form_class = DeleteForm
    template_name = "console/resources/delete.html"
    http_method_names = ["get", "post"]
    submit_label = "Delete"

    @property
    def title(self) -> str:  # type: ignore[override]  # a class attribute in the base
        return f"Delete {self.kind} {_quoted(self.resource.name)}"

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "name": self.resource.name}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(kind=self.kind, resource=self.resource, **self.consequences())
        return context

    def consequences(self) -> dict[str, Any]:
        """What the page warns about besides the messages."""
        return {}

    def remove(self) -> None:
        raise NotImplementedError

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        name = self.resource.name
        self.remove()
        messages.success(self.request, f"{self.kind.capitalize()} {_quoted(name)} deleted.")
        return HttpResponseRedirect(self.list_url())

    def dashboard_url(self) -> str:
        """Cancel goes back to the resource's page."""
        return self.detail_url()


class QueueDeleteView(ResourceDeleteView):
    kind = "queue"

    def consequences(self) -> dict[str, Any]:
        return {"feeders": queue_selectors.dead_letter_feeders(self.resource)}

    def remove(self) -> None:
        queue_services.queue_delete(tenant=self.tenant, actor=self.actor, queue=self.resource)


class TopicDeleteView(ResourceDeleteView):
    kind = "topic"

    def consequences(self) -> dict[str, Any]:
        subs = queue_selectors.topic_subscriptions(tenant=self.tenant, topic=self.resource)
        return {"subscription_names": list(subs.values_list("name", flat=True))}

    def remove(self) -> None:
        queue_services.topic_delete(tenant=self.tenant, actor=self.actor, topic=self.resource)


class SubscriptionDeleteView(ResourceDeleteView):
    kind = "subscription"

    def remove(self) -> None:
        queue_services.subscription_delete(
            tenant=self.tenant, actor=self.actor, subscription=self.resource
        )


# The create forms live under /new/ (console/urls.py), so every valid name, "new" included,
# has its page here.
urlpatterns = [
    path("queues/", QueueListView.as_view(), name="queue-list"),
    path("queues/<str:name>/", QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<str:name>/edit/", QueueEditView.as_view(), name="queue-edit"),
    path("queues/<str:name>/delete/", QueueDeleteView.as_view(), name="queue-delete"),
    path("topics/", TopicListView.as_view(), name="topic-list"),
    path("topics/<str:name>/", TopicDetailView.as_view(), name="topic-detail"),
    path("topics/<str:name>/edit/", TopicEditView.as_view(), name="topic-edit"),
    path("topics/<str:name>/delete/", TopicDeleteView.as_view(), name="topic-delete"),
    path("subscriptions/", SubscriptionListView.as_view(), name="subscription-list"),
    path("subscriptions/<str:name>/", SubscriptionDetailView.as_view(), name="subscription-detail"),
    path(
        "subscriptions/<str:name>/edit/", SubscriptionEditView.as_view(), name="subscription-edit"
    ),
    path(
        "subscriptions/<str:name>/delete/",
        SubscriptionDeleteView.as_view(),
        name="subscription-delete",
    ),
]

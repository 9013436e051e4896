"""The web console: server-rendered pages for the people of a tenant.

Every page needs a login and acts for one tenant, the one chosen in the session
(``session["tenant_id"]``, set at login to the user's first membership and changed with the
tenant switcher). Everything is looked up within that tenant, so another tenant's object is a
404. Viewers see everything and change nothing: every write view refuses them with a 403.
Writes go through the domain services, which also write the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import FormView, TemplateView
from redis.exceptions import RedisError

from console.forms import (
    KEY_LIMIT_FIELDS,
    KeyForm,
    LoginForm,
    QueueForm,
    SubscriptionForm,
    TopicForm,
    add_platform_error,
)
from console.resource_forms import delivery_settings
from kernel.errors import NotFound, PlatformError
from queues import selectors as queue_selectors
from queues import services as queue_services
from queues.models import Queue, Subscription, Topic
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.authority import Authority, RolePermissions, role_permissions
from tenants.models import ApiKey, Membership, Tenant
from tenants.selectors import SESSION_TENANT, session_membership, user_memberships

RECENT_EVENTS = 10
#: The session entry holding a new key's secret until its page is first shown.
NEW_KEY_SECRET = "new_key_secret"  # noqa: S105  # a session key name, not a secret
STORE_DOWN = "The message store is unreachable; try again in a moment."


# --- sign in and out ---------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if tenant_selectors.has_two_factor(user):
            # The password was right; the session is not signed in until the code is too.
            self.request.session[SESSION_SECOND_STEP] = {
                "user": str(user.pk),
                "backend": getattr(user, "backend", ""),
                "next": self.get_success_url(),
                "at": int(timezone.now().timestamp()),
            }
            return redirect("console:login-code")
        response = super().form_valid(form)
        after_sign_in(self.request, user)
        return response


@method_decorator(never_cache, name="dispatch")
class AdminLoginView(View):
    """/admin/login/: operators sign in through the console's form (its lock-out and
    two-factor step), then come back to ``next``. Someone signed in without staff rights
    gets a 403 page instead, not a loop between the admin and the console's sign-in."""

    def get(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated and not (user.is_active and user.is_staff):
            raise PermissionDenied("This account has no access to the operators' admin.")
        target = reverse("console:login")
        query = request.GET.urlencode()
        return HttpResponseRedirect(f"{target}?{query}" if query else target)

    post = get


@method_decorator(never_cache, name="dispatch")
class LogoutView(auth_views.LogoutView):
    """Only a POST signs out (Django's rule): a link or an image cannot sign anyone out. A GET
    (a typed or bookmarked /logout/) answers a page whose one button sends that POST; when
    nobody is signed in it goes to the sign-in page."""

    next_page = reverse_lazy("console:login")  # type: ignore[assignment]  # Django resolves it lazily
    http_method_names = ["get", "post", "options"]

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect("console:login")
        return render(request, "console/logout.html")


# --- the tenant gate ---------------------------------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class TenantMixin(LoginRequiredMixin):
    """Resolves the session's tenant and the user's role in it before any handler runs.

    A session naming a tenant the user no longer belongs to falls back to their first
    membership; a user with no membership at all gets a 403 page.
    """

    request: HttpRequest
    memberships: list[Membership]
    membership: Membership
    tenant: Tenant

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        memberships = list(user_memberships(request.user))
        if not memberships:
            return render(request, "console/no_tenant.html", status=403)
        chosen = request.session.get(SESSION_TENANT)
        membership = session_membership(memberships, chosen)
        assert membership is not None  # memberships is not empty
        if chosen != str(membership.tenant_id):
            request.session[SESSION_TENANT] = str(membership.tenant_id)
        self.memberships = memberships
        self.membership = membership
        self.tenant = membership.tenant
        self.check_access()
        return cast(HttpResponse, super().dispatch(request, *args, **kwargs))

    def check_access(self) -> None:
        """Raise PermissionDenied when the user's role may not use this view."""

    @property
    def permissions(self) -> RolePermissions:
        return role_permissions(self.membership.role)

    @property
    def can_write(self) -> bool:
        return self.permissions.can_write and self.tenant.is_active

    @property
    def actor(self) -> str:
        return f"user:{self.request.user.email}"  # type: ignore[union-attr]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        context.update(
            tenant=self.tenant,
            membership=self.membership,
            memberships=self.memberships,
            can_write=self.can_write,
        )
        return context


class WriterMixin(TenantMixin):
    """For views that change something: viewers (and suspended tenants) get a 403 on every
    method, so neither the form nor its POST is theirs to use."""

    def check_access(self) -> None:
        if not self.can_write:
            raise PermissionDenied("Your role in this tenant cannot make changes.")


class TenantSwitchView(TenantMixin, View):
    """POST tenant_id: act for another tenant the user belongs to (any role may switch)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        wanted = request.POST.get("tenant_id", "")
        target = next((m for m in self.memberships if str(m.tenant_id) == wanted), None)
        if target is None:
            raise Http404("No such tenant.")
        request.session[SESSION_TENANT] = str(target.tenant_id)
        messages.info(request, f"Now working in {target.tenant.name}.")
        return redirect("console:dashboard")


# --- the dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerRow:
    """A queue or a subscription with its live numbers (None when Redis did not answer)."""

    item: Queue | Subscription
    stats: dict[str, int] | None


@dataclass(frozen=True)
class TopicRow:
    item: Topic
    subscriptions: int


@dataclass(frozen=True)
class KeyRow:
    item: ApiKey
    status: str  # "active", "expired" or "revoked"
    can_revoke: bool = False  # within the member's role authority (and the member may write)


def _live_stats(rows: list[Queue] | list[Subscription]) -> list[dict[str, int]] | None:
    """available / in flight / delayed / oldest age of each; None if Redis is down."""
    try:
        return queue_selectors.live_stats(rows)
    except RedisError:
        return None


def _key_status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    return "active"


class DashboardView(TenantMixin, TemplateView):
    template_name = "console/dashboard.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        tenant = self.tenant
        queues = list(queue_selectors.queue_list(tenant=tenant).order_by("name"))
        topics = list(queue_selectors.topic_list(tenant=tenant).order_by("name"))
        subs = list(queue_selectors.subscription_list(tenant=tenant).order_by("name"))
        keys = list(tenant_selectors.key_list(tenant=tenant))

        queue_stats = _live_stats(queues)
        sub_stats = _live_stats(subs)
        per_topic: dict[Any, int] = {}
        for sub in subs:
            per_topic[sub.topic_id] = per_topic.get(sub.topic_id, 0) + 1
        authority = self.permissions.keys
        key_rows = [
            KeyRow(key, _key_status(key), self.can_write and authority.covers_key(key))
            for key in keys
        ]
        plan = tenant.plan
        context = super().get_context_data(**kwargs)
        context.update(
            plan=plan,
            queues=[
                ConsumerRow(q, queue_stats[i] if queue_stats is not None else None)
                for i, q in enumerate(queues)
            ],
            topics=[TopicRow(t, per_topic.get(t.id, 0)) for t in topics],
            subscriptions=[
                ConsumerRow(s, sub_stats[i] if sub_stats is not None else None)
                for i, s in enumerate(subs)
            ],
            keys=key_rows,
            stats_unavailable=queue_stats is None or sub_stats is None,
            counts=[
                ("Queues", len(queues), plan.max_queues),
                ("Topics", len(topics), plan.max_topics),
                ("Subscriptions", len(subs), plan.max_subscriptions),
                (
                    "Active API keys",
                    sum(1 for row in key_rows if row.status == "active"),
                    plan.max_api_keys,
                ),
            ],
            usage=tenant_selectors.usage_this_period(tenant=tenant),
            events=list(tenant_selectors.audit_event_list(tenant=tenant)[:RECENT_EVENTS]),
        )
        return context


# --- writes ------------------------------------------------------------------------------------


class ServiceFormView(WriterMixin, FormView):  # type: ignore[type-arg]  # generic only in the stubs
    """A form whose valid submission calls one service; the service's errors land on the form
    and a failed call stores nothing (every service is one transaction)."""

    template_name = "console/form.html"
    title = ""
    intro = ""
    submit_label = "Create"
    section = ""  # the dashboard section to return to

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        """Call the service and answer (usually :meth:`done`); PlatformError and RedisError
        are turned into form errors by the caller."""
        raise NotImplementedError

    def done(self, message: str) -> HttpResponse:
        messages.success(self.request, message)
        return HttpResponseRedirect(self.dashboard_url())

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            title=self.title,
            intro=self.intro,
            submit_label=self.submit_label,
            cancel_url=self.dashboard_url(),
        )
        return context

    def dashboard_url(self) -> str:
        return f"{reverse('console:dashboard')}#{self.section}"

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            return self.perform(form.cleaned_data)
        except PlatformError as exc:
            add_platform_error(form, exc)
        except RedisError:
            form.add_error(None, STORE_DOWN)
        return self.form_invalid(form)


class QueueCreateView(ServiceFormView):
    form_class = QueueForm
    title = "New queue"
    intro = "Each message is delivered to one consumer and removed once it is acknowledged."
    submit_label = "Create queue"
    section = "queues"

    def get_form_kwargs(self) -> dict[str, Any]:
        names = queue_selectors.queue_list(tenant=self.tenant).order_by("name")
        return {**super().get_form_kwargs(), "queue_names": [q.name for q in names]}

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        queue = queue_services.queue_create(
            tenant=self.tenant,
            actor=self.actor,
            name=data["name"],
            delay_seconds=data["delay_seconds"],
            retention_seconds=data["retention_seconds"],
            max_backlog_messages=data["max_backlog_messages"],
            max_backlog_bytes=data["max_backlog_bytes"],
            fair=data["fair"],
            **delivery_settings(data),
        )
        return self.done(f"Queue \u201c{queue.name}\u201d created.")


class TopicCreateView(ServiceFormView):
    form_class = TopicForm
    title = "New topic"
    intro = "Every subscription of a topic receives its own copy of each message."
    submit_label = "Create topic"
    section = "topics"

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        topic = queue_services.topic_create(
            tenant=self.tenant,
            actor=self.actor,
            name=data["name"],
            partitions=data["partitions"],
            retention_seconds=data["retention_seconds"],
            max_backlog_messages=data["max_backlog_messages"],
            max_backlog_bytes=data["max_backlog_bytes"],
        )
        return self.done(f"Topic \u201c{topic.name}\u201d created.")


class SubscriptionCreateView(ServiceFormView):
    form_class = SubscriptionForm
    title = "New subscription"
    intro = "A subscription reads a topic on its own: it sees every message published to it."
    submit_label = "Create subscription"
    section = "subscriptions"

    def get_form_kwargs(self) -> dict[str, Any]:
        topics = queue_selectors.topic_list(tenant=self.tenant).order_by("name")
        queues = queue_selectors.queue_list(tenant=self.tenant).order_by("name")
        return {
            **super().get_form_kwargs(),
            "topic_names": [t.name for t in topics],
            "queue_names": [q.name for q in queues],
        }

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        attributes = data["filter_attributes"]
        sub = queue_services.subscription_create(
            tenant=self.tenant,
            actor=self.actor,
            name=data["name"],
            topic=data["topic"],
            start_at=data["start_at"],
            filter={"attributes": attributes} if attributes else None,
            **delivery_settings(data),
        )
        return self.done(f"Subscription \u201c{sub.name}\u201d created.")


class KeyCreateView(ServiceFormView):
    """POST creates the key, leaves its secret in the session for one read and answers 303
    to :class:`KeyCreatedView`, so reloading the page it lands on creates no second key and
    resubmits nothing. Only the secret's hash is stored with the key."""

    form_class = KeyForm
    title = "New API key"
    intro = "Programs use an API key to publish, consume and manage over the REST API."
    submit_label = "Create key"
    section = "keys"

    @property
    def authority(self) -> Authority:
        """The keys this member may create and revoke, by their role."""
        return self.permissions.keys

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "grantable_scopes": self.authority.scopes}

    def perform(self, data: dict[str, Any]) -> HttpResponse:
        created = tenant_services.key_create(
            tenant=self.tenant,
            actor=self.actor,
            name=data["name"],
            scopes=data["scopes"],
            resources=data["resources"],
            expires_at=data["expires_at"],
            authority=self.authority,
            **{name: data.get(name) for name in KEY_LIMIT_FIELDS},
        )
        self.request.session[NEW_KEY_SECRET] = {
            "key_id": str(created.key.id),
            "secret": created.secret,
        }
        url = reverse("console:key-created", kwargs={"key_id": created.key.id})
        return HttpResponseRedirect(url, status=303)


def _key_or_404(tenant: Tenant, key_id: str) -> ApiKey:
    try:
        return tenant_selectors.key_get(tenant=tenant, key_id=key_id)
    except NotFound as exc:
        raise Http404("No such API key.") from exc


class KeyRevokeView(WriterMixin, TemplateView):
    """GET asks for confirmation, POST revokes. Another tenant's key is a 404. A key beyond
    the member's role authority (a developer and a manage key) is a 403 on both: members see
    every key of their tenant, so there is nothing to hide, only nothing to do."""

    template_name = "console/key_revoke.html"

    @property
    def authority(self) -> Authority:
        return self.permissions.keys

    def revocable(self, key_id: str) -> ApiKey:
        key = _key_or_404(self.tenant, key_id)
        if not self.authority.covers_key(key):
            raise PermissionDenied(
                f"Your role ({self.membership.role}) cannot revoke this key: its scopes "
                "reach beyond yours."
            )
        return key

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["key"] = self.revocable(self.kwargs["key_id"])
        return context

    def post(self, request: HttpRequest, key_id: str) -> HttpResponse:
        key = self.revocable(key_id)
        try:
            tenant_services.key_revoke(
                tenant=self.tenant, key_id=str(key.id), actor=self.actor, authority=self.authority
            )
        except NotFound as exc:  # deleted between the two lookups
            raise Http404("No such API key.") from exc
        messages.success(request, f"API key \u201c{key.name}\u201d revoked.")
        return redirect(f"{reverse('console:dashboard')}#keys")


class KeyCreatedView(TenantMixin, TemplateView):
    """Shows a new key's secret once: the first GET takes it out of the session (where
    :class:`KeyCreateView` left it), so a reload, the back button or another tab says it was
    already shown. Another tenant's key is a 404. The page is never cached (TenantMixin) and
    marked no-store."""

    template_name = "console/key_created.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = _key_or_404(self.tenant, self.kwargs["key_id"])
        pending = request.session.get(NEW_KEY_SECRET)
        secret = None
        if isinstance(pending, dict) and pending.get("key_id") == str(key.id):
            secret = pending.get("secret")
            del request.session[NEW_KEY_SECRET]
        context = self.get_context_data(key=key, secret=secret)
        response = self.render_to_response(context)
        response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
        return response


# --- after signing in (the password step, or the authenticator code after it) ------------------

#: Session key of a sign-in waiting for its authenticator code (console.accounts reads it).
SESSION_SECOND_STEP = "signin_second_step"


def after_sign_in(request: HttpRequest, user: Any) -> None:
    """Land a fresh session in the user's first tenant, and remind an unverified sign-up that
    its tenant stays read-only until the address is confirmed."""
    first = user_memberships(user).first()
    if first is not None:
        request.session[SESSION_TENANT] = str(first.tenant_id)
    if not tenant_selectors.is_verified(user):
        messages.warning(
            request,
            f"Confirm your address: open the link we sent to {user.email}. Until then your "
            "tenant is read-only.",
        )

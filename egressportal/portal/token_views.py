"""The portal's API tokens page: make (the token is shown once), list and revoke your own tokens.
Thin views over egressportal.tokens (services for writes, selectors for reads); CSRF on every post; someone
else's token is a 404 like a missing one."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from egressportal.tokens import selectors, services
from egressportal.tokens.models import ApiToken

from .forms import ApiTokenForm
from .views import portal_login_required

__all__ = ["token_list", "token_revoke"]


@portal_login_required
@never_cache  # the page that shows a new token must not be kept by any cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    created = secret = None
    if request.method == "POST" and form.is_valid():
        try:
            created, secret = services.api_token_create(
                user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"]
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            form = ApiTokenForm()  # a fresh form; the token is shown in this answer only, never again
    status = 400 if request.method == "POST" and created is None else 200
    context = {"form": form, "tokens": selectors.api_token_list(user=request.user), "created": created, "secret": secret}
    return render(request, "portal/tokens.html", context, status=status)


@portal_login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        token = selectors.api_token_get(user=request.user, pk=pk)
    except ApiToken.DoesNotExist:
        raise Http404("No such token.") from None
    services.api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Token '{token.name}' revoked: it no longer works.")
    return redirect("portal:tokens")

"""Forms of the portal: thin input checking in front of selectors and services."""

from __future__ import annotations

from django import forms

from egressportal.core.models import App, EgressType
from egressportal.tokens.services import TOKEN_LIFETIME_CHOICES

from .presentation import status_filter_choices

__all__ = ["ApiTokenForm", "AppSearchForm", "EgressToggleForm"]


class AppSearchForm(forms.Form):
    q = forms.CharField(
        label="Search apps", required=False, max_length=63, widget=forms.SearchInput(attrs={"placeholder": "App name"})
    )
    status = forms.ChoiceField(label="Egress status", required=False, choices=())

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any status"), *status_filter_choices()]


class EgressToggleForm(forms.Form):
    type = forms.ChoiceField(choices=EgressType.choices, error_messages={"invalid_choice": "Choose shared or dedicated egress."})
    # Sent by the confirmation step: going back to shared egress breaks allow-lists at once.
    confirm = forms.BooleanField(required=False)

    def needs_confirmation(self, app: App) -> bool:
        return (
            self.cleaned_data["type"] == EgressType.SHARED
            and app.egress_type == EgressType.DEDICATED
            and not self.cleaned_data["confirm"]
        )


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=64,
        help_text="What the token is for, e.g. 'terraform' or 'ci'.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "e.g. terraform"}),
    )
    days = forms.TypedChoiceField(
        label="Expires after",
        coerce=int,
        choices=[(d, f"{d} days") for d in TOKEN_LIFETIME_CHOICES],
        initial=90,
    )

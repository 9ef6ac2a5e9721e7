"""Forms of the notification settings: input checking only; rules live in the services."""

from __future__ import annotations

from django import forms

from .models import NotificationEvent

__all__ = ["WebhookForm", "EmailForm"]


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="URL", max_length=500,
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.example.com/egress", "autocomplete": "off"}),
        help_text="https only. Redirects are not followed; the receiver must answer within a few seconds.",
    )
    events = forms.MultipleChoiceField(
        label="Send these events", choices=NotificationEvent.choices, widget=forms.CheckboxSelectMultiple,
        initial=list(NotificationEvent.values),
        error_messages={"required": "Choose at least one event to send."},
    )


class EmailForm(forms.Form):
    events = forms.MultipleChoiceField(
        label="Email me when an app becomes", choices=NotificationEvent.choices, widget=forms.CheckboxSelectMultiple,
        required=False,
    )

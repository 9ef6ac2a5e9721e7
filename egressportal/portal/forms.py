"""Forms of the portal: thin input checking in front of selectors and services."""

from __future__ import annotations

from django import forms

from egressportal.core.models import EgressStatus, EgressType

__all__ = ["AppSearchForm", "EgressToggleForm"]


class AppSearchForm(forms.Form):
    q = forms.CharField(
        label="Search apps", required=False, max_length=63, widget=forms.SearchInput(attrs={"placeholder": "App name"})
    )
    status = forms.ChoiceField(
        label="Egress status", required=False, choices=[("", "Any status"), *EgressStatus.choices]
    )


class EgressToggleForm(forms.Form):
    type = forms.ChoiceField(choices=EgressType.choices, error_messages={"invalid_choice": "Choose shared or dedicated egress."})

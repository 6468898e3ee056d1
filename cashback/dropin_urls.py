"""The route of the drop-in endpoint, included at the root by gateway.urls."""

from __future__ import annotations

from django.urls import path

from cashback.dropin import NewPurchaseView

urlpatterns = [
    path("new_purchase", NewPurchaseView.as_view(), name="new-purchase"),
]

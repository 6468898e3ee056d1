from django.urls import path

from merchants import views

urlpatterns = [
    path("merchant", views.MerchantSettings.as_view(), name="merchant"),
    path("balance", views.BalanceView.as_view(), name="balance"),
    path("ledger", views.LedgerView.as_view(), name="ledger"),
]

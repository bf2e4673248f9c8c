"""Bots API: bots, deals, orders and exchange accounts, each the user's own.

Starting, pausing and deleting a bot and closing a deal are bots.services'
and bots.deals' operations; creating a bot and finding the user's paper
account have no service yet, so those two small model writes live here.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from bots import services
from bots.deals import close_deal
from bots.models import (
    Bot,
    BotStatus,
    CloseReason,
    Deal,
    DealState,
    ExchangeAccount,
    ExchangeName,
    Order,
)
from conditions.models import ConditionSubscription
from tradeeon.api_errors import Conflict

from .serializers import (
    BotFilterSerializer,
    BotSerializer,
    DealDetailSerializer,
    DealFilterSerializer,
    DealSerializer,
    ExchangeAccountSerializer,
    OrderFilterSerializer,
    OrderSerializer,
)

logger = logging.getLogger(__name__)

PAPER_ACCOUNT_NAME = "Paper"


# --- minimal bot operations (see the module docstring) ------------------------


def paper_account(user) -> ExchangeAccount:
    """The user's paper account, created on first use."""
    existing = (
        ExchangeAccount.objects.filter(user=user, exchange=ExchangeName.PAPER)
        .order_by("pk")
        .first()
    )
    if existing is not None:
        return existing
    taken = set(ExchangeAccount.objects.filter(user=user).values_list("name", flat=True))
    name = next(
        candidate
        for candidate in (PAPER_ACCOUNT_NAME, *(f"{PAPER_ACCOUNT_NAME} {n}" for n in range(2, 100)))
        if candidate not in taken
    )
    try:
        with transaction.atomic():
            return ExchangeAccount.objects.create(user=user, name=name, exchange=ExchangeName.PAPER)
    except IntegrityError:
        # Two first requests of one user at once: the other one created it.
        return ExchangeAccount.objects.get(user=user, name=name)


def end_entry_subscriptions(bot: Bot) -> int:
    return ConditionSubscription.objects.filter(
        bot=bot, active=True, bot_config__role="entry"
    ).update(active=False)


# --- views ---------------------------------------------------------------------


def _filtered(serializer_class, request: Request) -> dict:
    filters = serializer_class(data=request.query_params.dict())
    filters.is_valid(raise_exception=True)
    return filters.validated_data


@extend_schema_view(
    list=extend_schema(parameters=[BotFilterSerializer]),
    create=extend_schema(responses={201: BotSerializer, 404: None}),
    update=extend_schema(responses={200: BotSerializer, 404: None}),
    partial_update=extend_schema(responses={200: BotSerializer, 404: None}),
    destroy=extend_schema(responses={204: None, 409: None}),
)
class BotViewSet(viewsets.ModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = Bot.objects.none()
    serializer_class = BotSerializer

    def get_queryset(self):
        bots = Bot.objects.filter(user=self.request.user)
        if self.action == "list":
            bots = bots.filter(**_filtered(BotFilterSerializer, self.request))
        return bots.order_by("-created_at", "-pk")

    def perform_create(self, serializer: BotSerializer) -> None:
        values = serializer.validated_data
        serializer.instance = Bot.objects.create(
            user=self.request.user,
            account=values["account"] or paper_account(self.request.user),
            name=values["name"],
            kind=values["kind"],
            symbol=values["symbol"],
            base_timeframe=values["base_timeframe"],
            settings=values["settings"],
        )
        # Its entry conditions join the registry at once: identical entries of
        # other users' bots are one evaluation. A stopped bot's trigger opens nothing.
        services.subscribe_entry(serializer.instance)

    def perform_update(self, serializer: BotSerializer) -> None:
        values = serializer.validated_data
        with transaction.atomic():
            bot = Bot.objects.select_for_update().get(pk=serializer.instance.pk)
            listened_to = (bot.symbol, bot.base_timeframe, bot.settings.get("entry"))
            for name in ("account", "name", "kind", "symbol", "base_timeframe"):
                setattr(bot, name, values[name])
            bot.settings = values["settings"]
            bot.save()
            now_listens_to = (bot.symbol, bot.base_timeframe, bot.settings["entry"])
            if bot.status == BotStatus.RUNNING and listened_to != now_listens_to:
                # A running bot listens to what its entry now says.
                end_entry_subscriptions(bot)
                services.subscribe_entry(bot)
        serializer.instance = bot

    def perform_destroy(self, bot: Bot) -> None:
        if bot.deals.exclude(state=DealState.CLOSED).exists():
            raise Conflict("the bot has deals that are not closed: close them first")
        services.delete_bot(bot)

    @extend_schema(
        operation_id="bots_start",
        request=None,
        responses={200: BotSerializer, 409: None},
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
    )
    def start(self, request: Request, pk: int) -> Response:
        """Start the bot: its entry conditions are registered and subscribed."""
        bot = self.get_object()
        if bot.account.exchange != ExchangeName.PAPER and not bot.account.api_key:
            raise Conflict("the bot's exchange account has no API key")
        return Response(self.get_serializer(services.start_bot(bot)).data)

    @extend_schema(
        operation_id="bots_pause",
        request=None,
        responses={200: BotSerializer},
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
    )
    def pause(self, request: Request, pk: int) -> Response:
        """Pause the bot: no new deals; deals already open carry on."""
        return Response(self.get_serializer(services.pause_bot(self.get_object())).data)


@extend_schema_view(list=extend_schema(parameters=[DealFilterSerializer]))
class DealViewSet(viewsets.ReadOnlyModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = Deal.objects.none()

    def get_serializer_class(self):
        return DealDetailSerializer if self.action in ("retrieve", "close") else DealSerializer

    def get_queryset(self):
        deals = Deal.objects.filter(bot__user=self.request.user).select_related("bot")
        if self.action == "list":
            filters = _filtered(DealFilterSerializer, self.request)
            if "bot" in filters:
                deals = deals.filter(bot_id=filters["bot"])
            if "state" in filters:
                deals = deals.filter(state=filters["state"])
            if "symbol" in filters:
                deals = deals.filter(bot__symbol=filters["symbol"])
        else:
            deals = deals.prefetch_related("orders", "events")
        return deals.order_by("-created_at", "-pk")

    @extend_schema(
        operation_id="deals_close",
        request=None,
        responses={200: DealDetailSerializer, 409: None},
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
    )
    def close(self, request: Request, pk: int) -> Response:
        """Close an open deal by hand: it sells what it holds at market."""
        deal = self.get_object()
        if deal.state != DealState.OPEN:
            raise Conflict(f"the deal is {deal.state}: only an open deal can be closed by hand")
        if close_deal(deal.pk, CloseReason.MANUAL, "manual") is None:
            raise Conflict("the deal changed state meanwhile; reload it")
        deal = self.get_queryset().get(pk=deal.pk)
        return Response(self.get_serializer(deal).data)


@extend_schema_view(list=extend_schema(parameters=[OrderFilterSerializer]))
class OrderViewSet(viewsets.ReadOnlyModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = Order.objects.none()
    serializer_class = OrderSerializer

    def get_queryset(self):
        orders = Order.objects.filter(deal__bot__user=self.request.user).select_related("deal__bot")
        if self.action == "list":
            filters = _filtered(OrderFilterSerializer, self.request)
            lookups = {"bot": "deal__bot_id", "deal": "deal_id", "symbol": "deal__bot__symbol"}
            orders = orders.filter(
                **{lookups.get(name, name): value for name, value in filters.items()}
            )
        return orders.order_by("-created_at", "-pk")


class ExchangeAccountViewSet(viewsets.ModelViewSet):
    # For the schema's types only; get_queryset scopes every query to the user.
    queryset = ExchangeAccount.objects.none()
    serializer_class = ExchangeAccountSerializer

    def get_queryset(self):
        return ExchangeAccount.objects.filter(user=self.request.user).order_by("name", "pk")

    def perform_create(self, serializer: ExchangeAccountSerializer) -> None:
        serializer.save(user=self.request.user)

    @extend_schema(responses={204: None, 409: None})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        account = self.get_object()
        try:
            account.delete()
        except ProtectedError:
            raise Conflict("bots trade on this account: delete them first") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

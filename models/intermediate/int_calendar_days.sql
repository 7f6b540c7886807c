{#- Every day of the calendar with the DHIS2 period of each type that holds it.
    Identifiers follow DHIS2: 20260315, 2026W5, 2026WedW5, 202605, 202603B, 2026Q2, 2026S1,
    2026AprilS1, 2026, 2026April ... Week numbers have no leading zero. For each week-start day,
    a week belongs to the year of its fourth day (start + 3), so week 1 holds 4 January. -#}
{%- set first_year = var('healthpipe_first_year') | int -%}
{%- set last_year = var('healthpipe_last_year') | int -%}
{%- set week_flavours = [('Weekly', '', 1), ('WeeklyWednesday', 'Wed', 3), ('WeeklyThursday', 'Thu', 4),
                         ('WeeklySaturday', 'Sat', 6), ('WeeklySunday', 'Sun', 7)] -%}
{%- set financial_years = [('FinancialApril', 'April', 4), ('FinancialJuly', 'July', 7),
                           ('FinancialOct', 'Oct', 10), ('FinancialNov', 'Nov', 11)] -%}

with days as (

    {{ hp_day_spine((first_year - 1) ~ '-01-01', (last_year + 1) ~ '-12-31') }}

),

parts as (

    select
        day,
        cast(extract(year from day) as integer) as y,
        cast(extract(month from day) as integer) as m,
        cast(extract(day from day) as integer) as d,
        cast({{ hp_iso_dow('day') }} as integer) as dow
    from days

),

week_starts as (

    select
        parts.*,
        {%- for period_type, infix, start_dow in week_flavours %}
        day - cast(((dow - {{ start_dow }} + 7) % 7) as integer) as start_{{ period_type | lower }}{{ "," if not loop.last }}
        {%- endfor %}
    from parts

)

select
    day,
    cast(y * 10000 + m * 100 + d as {{ hp_type_text() }}) as daily_id,
    {%- for period_type, infix, start_dow in week_flavours %}
    cast(cast(extract(year from start_{{ period_type | lower }} + 3) as integer) as {{ hp_type_text() }})
        || '{{ infix }}W'
        || cast(cast(floor((extract(doy from start_{{ period_type | lower }} + 3) - 1) / 7.0) as integer) + 1 as {{ hp_type_text() }})
        as {{ period_type | lower }}_id,
    {%- endfor %}
    -- bi-week n = ISO weeks 2n-1 and 2n; DHIS2 makes 26 a year, so ISO week 53 has none
    case
        when cast(floor((extract(doy from start_weekly + 3) - 1) / 7.0) as integer) + 1 <= 52
        then cast(cast(extract(year from start_weekly + 3) as integer) as {{ hp_type_text() }}) || 'BiW'
            || cast(cast(floor(floor((extract(doy from start_weekly + 3) - 1) / 7.0) / 2) as integer) + 1 as {{ hp_type_text() }})
    end as biweekly_id,
    cast(y * 100 + m as {{ hp_type_text() }}) as monthly_id,
    cast(y * 100 + cast(floor((m - 1) / 2.0) as integer) + 1 as {{ hp_type_text() }}) || 'B' as bimonthly_id,
    cast(y as {{ hp_type_text() }}) || 'Q' || cast(cast(floor((m - 1) / 3.0) as integer) + 1 as {{ hp_type_text() }}) as quarterly_id,
    cast(y as {{ hp_type_text() }}) || case when m <= 6 then 'S1' else 'S2' end as sixmonthly_id,
    cast(case when m >= 4 then y else y - 1 end as {{ hp_type_text() }})
        || case when m between 4 and 9 then 'AprilS1' else 'AprilS2' end as sixmonthlyapril_id,
    cast(y as {{ hp_type_text() }}) as yearly_id,
    {%- for period_type, suffix, first_month in financial_years %}
    cast(case when m >= {{ first_month }} then y else y - 1 end as {{ hp_type_text() }}) || '{{ suffix }}' as {{ period_type | lower }}_id{{ "," if not loop.last }}
    {%- endfor %}
from week_starts

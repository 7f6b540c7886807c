{#- The calendar in long form: one row per day and period type. -#}
{%- set period_types = ['Daily', 'Weekly', 'WeeklyWednesday', 'WeeklyThursday', 'WeeklySaturday',
                        'WeeklySunday', 'BiWeekly', 'Monthly', 'BiMonthly', 'Quarterly', 'SixMonthly',
                        'SixMonthlyApril', 'Yearly', 'FinancialApril', 'FinancialJuly',
                        'FinancialOct', 'FinancialNov'] -%}

{% for period_type in period_types %}
select day, '{{ period_type }}' as period_type, {{ period_type | lower }}_id as period_id
from {{ ref('int_calendar_days') }}
where {{ period_type | lower }}_id is not null
{% if not loop.last %}union all{% endif %}
{% endfor %}
